//! The L7 proxy over real loopback TCP: a recording upstream server, the proxy in front of it,
//! and raw clients that send exactly the bytes under test. The upstream records every byte it
//! receives, which is how these tests show that a denied or malformed request never reaches it
//! and that an allowed one arrives exactly as judged.

use std::{
    net::{SocketAddr, SocketAddrV4},
    sync::{Arc, Mutex},
    time::Duration,
};

use enforcer::proxy::{
    CompiledRules, DirectConnector, HttpRuleSpec, L7Kind, L7Record, L7Verdict, Observer,
    ProxyConfig, ProxyStats, serve_listener,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::{sleep, timeout},
};

// ---------------------------------------------------------------------------------------------
// The recording upstream server.

/// What the upstream saw: per accepted connection, the bytes received (first 1 MiB) and the
/// total count.
#[derive(Default)]
struct Seen {
    conns: Vec<ConnSeen>,
}

#[derive(Default, Clone)]
struct ConnSeen {
    bytes: Vec<u8>,
    total: u64,
}

const RECORD_CAP: usize = 1 << 20;

#[derive(Clone)]
struct Upstream {
    addr: SocketAddrV4,
    seen: Arc<Mutex<Seen>>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let idx = {
                    let mut g = s.lock().unwrap();
                    g.conns.push(ConnSeen::default());
                    g.conns.len() - 1
                };
                tokio::spawn(upstream_conn(stream, s.clone(), idx));
            }
        });
        Self { addr, seen }
    }

    fn conns(&self) -> usize {
        self.seen.lock().unwrap().conns.len()
    }

    /// All bytes received on all connections, concatenated.
    fn all_bytes(&self) -> Vec<u8> {
        self.seen
            .lock()
            .unwrap()
            .conns
            .iter()
            .flat_map(|c| c.bytes.clone())
            .collect()
    }

    fn total(&self) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .conns
            .iter()
            .map(|c| c.total)
            .sum()
    }
}

/// Reads more bytes, recording them. Returns false at end of stream.
async fn up_read(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    seen: &Mutex<Seen>,
    idx: usize,
) -> bool {
    let mut tmp = vec![0u8; 64 * 1024];
    let n = stream.read(&mut tmp).await.unwrap_or(0);
    if n == 0 {
        return false;
    }
    {
        let mut g = seen.lock().unwrap();
        let c = &mut g.conns[idx];
        c.total += n as u64;
        let room = RECORD_CAP.saturating_sub(c.bytes.len()).min(n);
        c.bytes.extend_from_slice(&tmp[..room]);
    }
    buf.extend_from_slice(&tmp[..n]);
    true
}

/// A small HTTP/1.1 server: answers each request with `METHOD TARGET body=N`, with a few
/// special targets for error paths. Bodies are counted, not kept.
async fn upstream_conn(mut stream: TcpStream, seen: Arc<Mutex<Seen>>, idx: usize) {
    let mut buf = Vec::new();
    loop {
        let (method, target, close, body, expect, upgrade, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let get = |name: &str| {
                        req.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).to_string())
                    };
                    let body = if get("transfer-encoding").is_some() {
                        None
                    } else {
                        Some(get("content-length").map_or(0, |v| v.parse::<u64>().unwrap()))
                    };
                    let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
                        || req.version == Some(0);
                    break (
                        req.method.unwrap().to_string(),
                        req.path.unwrap().to_string(),
                        close,
                        body,
                        get("expect").is_some(),
                        get("upgrade").is_some(),
                        n,
                    );
                }
                Ok(httparse::Status::Partial) => {
                    if !up_read(&mut stream, &mut buf, &seen, idx).await {
                        return;
                    }
                }
                Err(_) => return,
            }
        };
        buf.drain(..head_len);
        if expect {
            let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        if target == "/early-reply" {
            let _ = stream
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig\n")
                .await;
            sleep(Duration::from_millis(200)).await;
            return;
        }
        // Read the body (counting only).
        let mut body_len: u64 = 0;
        match body {
            Some(n) => loop {
                let take = (buf.len() as u64).min(n - body_len) as usize;
                body_len += take as u64;
                buf.drain(..take);
                if body_len == n {
                    break;
                }
                if !up_read(&mut stream, &mut buf, &seen, idx).await {
                    return;
                }
            },
            None => {
                // Canonical chunked (what the proxy sends): size CRLF data CRLF ... 0 CRLF CRLF.
                loop {
                    let line_end = loop {
                        if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                            break p;
                        }
                        if !up_read(&mut stream, &mut buf, &seen, idx).await {
                            return;
                        }
                    };
                    let size =
                        u64::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16)
                            .unwrap();
                    buf.drain(..line_end + 2);
                    let mut left = size + 2;
                    while left > 0 {
                        if buf.is_empty() && !up_read(&mut stream, &mut buf, &seen, idx).await {
                            return;
                        }
                        let take = (buf.len() as u64).min(left) as usize;
                        buf.drain(..take);
                        left -= take as u64;
                    }
                    body_len += size;
                    if size == 0 {
                        break;
                    }
                }
            }
        }
        if target == "/drop" {
            return;
        }
        if target == "/slow" {
            sleep(Duration::from_secs(3)).await;
        }
        if upgrade && target == "/ws" {
            let _ = stream
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                .await;
            // Echo whatever comes next, uppercased.
            loop {
                if buf.is_empty() && !up_read(&mut stream, &mut buf, &seen, idx).await {
                    return;
                }
                let data: Vec<u8> = buf.drain(..).map(|b| b.to_ascii_uppercase()).collect();
                if stream.write_all(&data).await.is_err() {
                    return;
                }
            }
        }
        let text = format!("{method} {target} body={body_len}");
        let resp = if target.starts_with("/chunked-response") {
            format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n{:x}\r\n{text}\r\n0\r\nx-trailer: 1\r\n\r\n",
                text.len()
            )
        } else if target == "/no-content" {
            "HTTP/1.1 204 No Content\r\n\r\n".to_string()
        } else if target == "/close-delimited" {
            format!("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{text}")
        } else if target == "/v1/request-landing" {
            "HTTP/1.1 200 OK\r\ncontent-length: 12\r\ncontent-type: text/plain\r\n\r\nShip landed\n"
                .to_string()
        } else if method == "HEAD" {
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", text.len())
        } else {
            let extra = if close { "connection: close\r\n" } else { "" };
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{extra}content-type: text/plain\r\n\r\n{text}",
                text.len()
            )
        };
        if stream.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
        // `/close-after`: a keep-alive response, then the server drops the idle connection (as
        // a server's keep-alive timeout would).
        if close || target == "/close-delimited" || target == "/close-after" {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy under test.

#[derive(Default)]
struct Records(Mutex<Vec<L7Record>>);

impl Observer for Records {
    fn record(&self, rec: L7Record) {
        self.0.lock().unwrap().push(rec);
    }
}

struct Proxy {
    addr: SocketAddr,
    upstream: Upstream,
    stats: Arc<ProxyStats>,
    records: Arc<Records>,
}

fn rule(
    method: Option<&str>,
    path: Option<&str>,
    host: Option<&str>,
    headers: &[&str],
) -> HttpRuleSpec {
    HttpRuleSpec {
        method: method.map(Into::into),
        path: path.map(Into::into),
        host: host.map(Into::into),
        headers: headers.iter().map(|h| h.to_string()).collect(),
    }
}

fn star_wars() -> Vec<HttpRuleSpec> {
    vec![
        rule(Some("GET"), Some("/v1"), None, &[]),
        rule(Some("POST"), Some("/v1/request-landing"), None, &[]),
    ]
}

fn test_config() -> ProxyConfig {
    ProxyConfig {
        header_read_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        upstream_connect_timeout: Duration::from_secs(2),
        upstream_response_timeout: Duration::from_secs(5),
        ..ProxyConfig::default()
    }
}

/// Starts a proxy whose every connection's original destination is `upstream`.
async fn proxy_to(upstream: Upstream, rules: Vec<HttpRuleSpec>, cfg: ProxyConfig) -> Proxy {
    let list: Vec<_> = rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| (r, i as u32))
        .collect();
    let compiled = CompiledRules::compile(&list).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(ProxyStats::new());
    let records = Arc::new(Records::default());
    let dst = upstream.addr;
    tokio::spawn(serve_listener(
        listener,
        move |_s: &TcpStream| Ok(dst),
        Arc::new(compiled),
        Arc::new(DirectConnector),
        records.clone(),
        stats.clone(),
        Arc::new(cfg),
    ));
    Proxy {
        addr,
        upstream,
        stats,
        records,
    }
}

async fn proxy(rules: Vec<HttpRuleSpec>) -> Proxy {
    proxy_to(Upstream::start().await, rules, test_config()).await
}

// ---------------------------------------------------------------------------------------------
// A raw client.

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(p: &Proxy) -> Self {
        Self {
            stream: TcpStream::connect(p.addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).await.unwrap();
    }

    async fn more(&mut self) -> bool {
        let mut tmp = [0u8; 16384];
        match timeout(Duration::from_secs(10), self.stream.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(_) => panic!("client read timed out"),
        }
    }

    /// Reads one response (`None` if the connection closed first). `head`: response to HEAD.
    async fn response_to(&mut self, head: bool) -> Option<Resp> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&self.buf) {
                let status = r.code.unwrap();
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).to_string(),
                        )
                    })
                    .collect();
                self.buf.drain(..n);
                let mut resp = Resp {
                    status,
                    headers,
                    body: Vec::new(),
                };
                if head || status == 204 || status == 304 || (100..200).contains(&status) {
                    return Some(resp);
                }
                if let Some(cl) = resp.header("content-length") {
                    let cl: usize = cl.parse().unwrap();
                    while self.buf.len() < cl {
                        assert!(self.more().await, "closed inside body");
                    }
                    resp.body = self.buf.drain(..cl).collect();
                } else if resp.header("transfer-encoding").is_some() {
                    loop {
                        let end = loop {
                            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                                break p;
                            }
                            assert!(self.more().await);
                        };
                        let size = usize::from_str_radix(
                            std::str::from_utf8(&self.buf[..end]).unwrap(),
                            16,
                        )
                        .unwrap();
                        while self.buf.len() < end + 2 + size + 2 {
                            assert!(self.more().await);
                        }
                        resp.body
                            .extend_from_slice(&self.buf[end + 2..end + 2 + size]);
                        assert_eq!(&self.buf[end + 2 + size..end + 4 + size], b"\r\n");
                        self.buf.drain(..end + 4 + size);
                        if size == 0 {
                            break;
                        }
                    }
                } else {
                    while self.more().await {}
                    resp.body = std::mem::take(&mut self.buf);
                }
                return Some(resp);
            }
            if !self.more().await {
                return None;
            }
        }
    }

    async fn response(&mut self) -> Option<Resp> {
        self.response_to(false).await
    }

    /// True if the proxy closed the connection (no more bytes).
    async fn closed(&mut self) -> bool {
        !self.more().await && self.buf.is_empty()
    }
}

/// Sends one request on a fresh connection and reads the response.
async fn one(p: &Proxy, raw: &str) -> Resp {
    let mut c = Client::connect(p).await;
    c.send(raw.as_bytes()).await;
    c.response().await.expect("a response")
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: deathstar\r\n\r\n")
}

fn assert_denied(r: &Resp) {
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.text(), "Access denied\r\n");
    assert_eq!(r.header("content-type"), Some("text/plain"));
}

// ---------------------------------------------------------------------------------------------
// Policy semantics.

#[tokio::test]
async fn star_wars_landing_allowed_exhaust_port_denied() {
    let p = proxy(star_wars()).await;
    let landing = "POST /v1/request-landing HTTP/1.1\r\nHost: deathstar.default.svc.cluster.local\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n";
    let r = one(&p, landing).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Ship landed\n");
    let r = one(
        &p,
        "PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar.default.svc.cluster.local\r\n\r\n",
    )
    .await;
    assert_denied(&r);
    let r = one(&p, &get("/v1")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "GET /v1 body=0"));
    // The server received exactly the two allowed requests, byte for byte, and nothing else.
    let mut expected = landing.as_bytes().to_vec();
    expected.extend_from_slice(get("/v1").as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&p.upstream.all_bytes()),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(p.upstream.conns(), 2);
    let s = p.stats.snapshot();
    assert_eq!(
        (s.received, s.forwarded, s.denied, s.parse_errors),
        (3, 2, 1, 0)
    );
    assert_eq!(s.latency_count, 2);
    let recs = p.records.0.lock().unwrap();
    let denied: Vec<_> = recs
        .iter()
        .filter(|r| r.verdict == L7Verdict::Denied)
        .collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(
        (denied[0].method.as_str(), denied[0].url.as_str()),
        ("PUT", "/v1/exhaust-port")
    );
    assert_eq!(
        denied[0].policy_hint.as_deref(),
        Some("no HTTP rule matched")
    );
    let responses: Vec<_> = recs.iter().filter(|r| r.kind == L7Kind::Response).collect();
    assert_eq!(responses.len(), 2);
    assert!(
        responses
            .iter()
            .all(|r| r.status == Some(200) && r.latency.is_some())
    );
    assert_eq!(responses[0].rule, Some(1));
}

#[tokio::test]
async fn path_is_anchored_and_includes_the_query() {
    let mut rules = star_wars();
    rules.push(rule(Some("GET"), Some("/search\\?q=[a-z]+"), None, &[]));
    let p = proxy(rules).await;
    for (path, allowed) in [
        ("/v1", true),
        ("/v1/exhaust-port", false),
        ("/v1/", false),
        ("/x/v1", false),
        ("/v1?debug=1", false),
        ("/search?q=tie", true),
        ("/search?q=tie&admin=1", false),
        ("/search", false),
    ] {
        let r = one(&p, &get(path)).await;
        if allowed {
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.text(), format!("GET {path} body=0"));
        } else {
            assert_denied(&r);
        }
    }
    assert_eq!(p.upstream.conns(), 2);
}

#[tokio::test]
async fn headers_and_host() {
    let p = proxy(vec![
        rule(Some("GET"), Some("/token"), None, &["X-Token: s3cret"]),
        rule(Some("GET"), Some("/present"), None, &["X-Trace"]),
        rule(
            None,
            Some("/hosted"),
            Some("api\\.empire\\.(local|svc)"),
            &[],
        ),
    ])
    .await;
    let cases = [
        (
            "GET /token HTTP/1.1\r\nHost: h\r\nx-token: s3cret\r\n\r\n",
            true,
        ),
        (
            "GET /token HTTP/1.1\r\nHost: h\r\nX-Token: wrong\r\n\r\n",
            false,
        ),
        (
            "GET /token HTTP/1.1\r\nHost: h\r\nX-Token: s3cret\r\nX-Token: other\r\n\r\n",
            false,
        ),
        ("GET /token HTTP/1.1\r\nHost: h\r\n\r\n", false),
        (
            "GET /present HTTP/1.1\r\nHost: h\r\nX-TRACE: \r\n\r\n",
            true,
        ),
        ("GET /present HTTP/1.1\r\nHost: h\r\n\r\n", false),
        (
            "DELETE /hosted HTTP/1.1\r\nHost: api.empire.local\r\n\r\n",
            true,
        ),
        ("GET /hosted HTTP/1.1\r\nHost: api.empire.svc\r\n\r\n", true),
        (
            "GET /hosted HTTP/1.1\r\nHost: api.empire.local.evil\r\n\r\n",
            false,
        ),
        (
            "GET /hosted HTTP/1.1\r\nHost: xapi.empire.local\r\n\r\n",
            false,
        ),
        ("GET /hosted HTTP/1.0\r\n\r\n", false),
    ];
    for (raw, allowed) in cases {
        let r = one(&p, raw).await;
        if allowed {
            assert_eq!(r.status, 200, "{raw:?} → {r:?}");
        } else {
            assert_denied(&r);
        }
    }
}

#[tokio::test]
async fn l4_only_allow_lifts_l7() {
    let upstream = Upstream::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dst = upstream.addr;
    tokio::spawn(serve_listener(
        listener,
        move |_s: &TcpStream| Ok(dst),
        Arc::new(CompiledRules::allow_all(9)),
        Arc::new(DirectConnector),
        Arc::new(enforcer::proxy::NullObserver),
        Arc::new(ProxyStats::new()),
        Arc::new(test_config()),
    ));
    let p = Proxy {
        addr,
        upstream,
        stats: Arc::new(ProxyStats::new()),
        records: Arc::default(),
    };
    let r = one(
        &p,
        "PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Connections: keep-alive, pipelining, lazy upstream.

#[tokio::test]
async fn keep_alive_reuses_one_upstream_connection() {
    let p = proxy(star_wars()).await;
    let mut c = Client::connect(&p).await;
    for i in 0..5 {
        c.send(get("/v1").as_bytes()).await;
        let r = c.response().await.unwrap();
        assert_eq!(r.status, 200, "request {i}");
        c.send(b"PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\n\r\n")
            .await;
        assert_denied(&c.response().await.unwrap());
    }
    assert_eq!(p.upstream.conns(), 1);
    assert_eq!(p.upstream.all_bytes(), get("/v1").repeat(5).into_bytes());
}

#[tokio::test]
async fn pipelined_requests_are_judged_one_by_one_in_order() {
    let p = proxy(star_wars()).await;
    let mut c = Client::connect(&p).await;
    let landing =
        "POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 4\r\n\r\nship";
    let exhaust =
        "PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 4\r\n\r\nboom";
    let batch = [
        get("/v1"),
        exhaust.to_string(),
        landing.to_string(),
        get("/v1/exhaust-port"),
        get("/v1"),
    ]
    .concat();
    c.send(batch.as_bytes()).await;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(c.response().await.unwrap().status);
        }
        v
    };
    assert_eq!(statuses, [200, 403, 200, 403, 200]);
    let expected = [get("/v1"), landing.to_string(), get("/v1")].concat();
    assert_eq!(String::from_utf8_lossy(&p.upstream.all_bytes()), expected);
    // Still usable afterwards.
    c.send(get("/v1").as_bytes()).await;
    assert_eq!(c.response().await.unwrap().status, 200);
}

#[tokio::test]
async fn denied_only_connection_never_reaches_the_server() {
    let p = proxy(star_wars()).await;
    let mut c = Client::connect(&p).await;
    for _ in 0..3 {
        c.send(b"PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\n\r\n")
            .await;
        assert_denied(&c.response().await.unwrap());
    }
    drop(c);
    sleep(Duration::from_millis(100)).await;
    assert_eq!(p.upstream.conns(), 0);
}

#[tokio::test]
async fn denied_bodies_small_drained_large_closed() {
    let p = proxy(star_wars()).await;
    let mut c = Client::connect(&p).await;
    c.send(b"PUT /v1/exhaust-port HTTP/1.1\r\nHost: d\r\nContent-Length: 10\r\n\r\n0123456789")
        .await;
    let r = c.response().await.unwrap();
    assert_denied(&r);
    assert_eq!(r.header("connection"), None);
    c.send(get("/v1").as_bytes()).await;
    assert_eq!(c.response().await.unwrap().status, 200);
    // Chunked body: 403 and close.
    c.send(b"PUT /v1/exhaust-port HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").await;
    let r = c.response().await.unwrap();
    assert_denied(&r);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed().await);
    // A large body still being sent gets its 403 (lingering close, not a reset).
    let mut c = Client::connect(&p).await;
    c.send(b"PUT /v1/exhaust-port HTTP/1.1\r\nHost: d\r\nContent-Length: 10000000\r\n\r\n")
        .await;
    c.send(&vec![b'x'; 200_000]).await;
    assert_denied(&c.response().await.unwrap());
    assert_eq!(p.upstream.all_bytes(), get("/v1").into_bytes());
}

#[tokio::test]
async fn http10_and_connection_close() {
    let p = proxy(star_wars()).await;
    let mut c = Client::connect(&p).await;
    c.send(b"GET /v1 HTTP/1.0\r\n\r\n").await;
    let r = c.response().await.unwrap();
    assert_eq!(r.status, 200);
    assert!(c.closed().await);
    let mut c = Client::connect(&p).await;
    c.send(b"GET /v1 HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(c.response().await.unwrap().status, 200);
    assert!(c.closed().await);
    // HTTP/1.0 keep-alive to a denied request keeps the connection.
    let mut c = Client::connect(&p).await;
    c.send(b"PUT /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let r = c.response().await.unwrap();
    assert_denied(&r);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET /v1 HTTP/1.1\r\nHost: d\r\n\r\n").await;
    assert_eq!(c.response().await.unwrap().status, 200);
}

// ---------------------------------------------------------------------------------------------
// Bodies.

#[tokio::test]
async fn chunked_upload_is_reencoded_canonically() {
    let p = proxy(vec![rule(Some("POST"), Some("/upload"), None, &[])]).await;
    let mut c = Client::connect(&p).await;
    c.send(b"POST /upload HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n5;name=\"v\"\r\nhello\r\n").await;
    sleep(Duration::from_millis(50)).await;
    c.send(b"0006\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n")
        .await;
    let r = c.response().await.unwrap();
    assert_eq!(r.text(), "POST /upload body=11");
    let expected = "POST /upload HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    assert_eq!(String::from_utf8_lossy(&p.upstream.all_bytes()), expected);
    // Keep-alive after a chunked body.
    c.send(b"POST /upload HTTP/1.1\r\nHost: d\r\nContent-Length: 3\r\n\r\nabc")
        .await;
    assert_eq!(c.response().await.unwrap().text(), "POST /upload body=3");
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn large_bodies_stream_with_bounded_memory() {
    const SIZE: u64 = 50 << 20;
    let p = proxy(vec![rule(Some("POST"), Some("/upload"), None, &[])]).await;
    let before = peak_rss_kib();
    // Content-Length.
    let mut c = Client::connect(&p).await;
    c.send(
        format!("POST /upload HTTP/1.1\r\nHost: d\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes(),
    )
    .await;
    let block = vec![b'z'; 256 * 1024];
    let mut sent = 0;
    while sent < SIZE {
        c.send(&block).await;
        sent += block.len() as u64;
    }
    assert_eq!(
        c.response().await.unwrap().text(),
        format!("POST /upload body={SIZE}")
    );
    // Chunked, with odd chunk sizes.
    c.send(b"POST /upload HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    let chunk = vec![b'q'; 100_003];
    let mut total = 0u64;
    let mut piece = Vec::new();
    while total < SIZE {
        piece.clear();
        piece.extend_from_slice(format!("{:X}\r\n", chunk.len()).as_bytes());
        piece.extend_from_slice(&chunk);
        piece.extend_from_slice(b"\r\n");
        c.send(&piece).await;
        total += chunk.len() as u64;
    }
    c.send(b"0\r\n\r\n").await;
    assert_eq!(
        c.response().await.unwrap().text(),
        format!("POST /upload body={total}")
    );
    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(
        grown_mib < 40,
        "peak RSS grew by {grown_mib} MiB for two 50 MiB bodies"
    );
    assert!(p.upstream.total() > 2 * SIZE);
}

#[tokio::test]
async fn expect_100_continue_is_relayed() {
    let p = proxy(vec![rule(Some("POST"), Some("/upload"), None, &[])]).await;
    let mut c = Client::connect(&p).await;
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: d\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    let interim = c.response().await.unwrap();
    assert_eq!(interim.status, 100);
    c.send(b"hello").await;
    assert_eq!(c.response().await.unwrap().text(), "POST /upload body=5");
}

#[tokio::test]
async fn early_upstream_response_closes_the_client() {
    let p = proxy(vec![rule(Some("POST"), None, None, &[])]).await;
    let mut c = Client::connect(&p).await;
    c.send(b"POST /early-reply HTTP/1.1\r\nHost: d\r\nContent-Length: 1000000\r\n\r\n")
        .await;
    c.send(&[b'a'; 1000]).await;
    let r = c.response().await.unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
}

// ---------------------------------------------------------------------------------------------
// Responses.

#[tokio::test]
async fn response_framings_are_relayed() {
    let p = proxy(vec![rule(None, None, None, &[])]).await;
    let mut c = Client::connect(&p).await;
    c.send(get("/chunked-response").as_bytes()).await;
    let r = c.response().await.unwrap();
    assert_eq!(r.text(), "helloGET /chunked-response body=0");
    c.send(b"HEAD /x HTTP/1.1\r\nHost: d\r\n\r\n").await;
    let r = c.response_to(true).await.unwrap();
    assert_eq!((r.status, r.header("content-length")), (200, Some("14")));
    c.send(get("/no-content").as_bytes()).await;
    assert_eq!(c.response().await.unwrap().status, 204);
    c.send(get("/after").as_bytes()).await;
    assert_eq!(c.response().await.unwrap().text(), "GET /after body=0");
    c.send(get("/close-delimited").as_bytes()).await;
    let r = c.response().await.unwrap();
    assert_eq!(r.text(), "GET /close-delimited body=0");
    assert_eq!(p.upstream.conns(), 1);
}

#[tokio::test]
async fn close_delimited_response_closes_the_client() {
    let p = proxy(vec![rule(None, None, None, &[])]).await;
    let mut c = Client::connect(&p).await;
    c.send(get("/close-delimited").as_bytes()).await;
    assert_eq!(c.response().await.unwrap().status, 200);
    assert!(c.closed().await);
}

#[tokio::test]
async fn upstream_closing_an_idle_connection_gets_a_fresh_one() {
    let p = proxy(vec![rule(None, None, None, &[])]).await;
    let mut c = Client::connect(&p).await;
    for i in 0..3 {
        c.send(get("/close-after").as_bytes()).await;
        let r = c.response().await.unwrap();
        assert_eq!(
            (r.status, r.header("connection")),
            (200, None),
            "request {i}"
        );
        sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(p.upstream.conns(), 3);
    assert_eq!(p.stats.snapshot().upstream_errors, 0);
}

// ---------------------------------------------------------------------------------------------
// Framing attacks: 400, nothing forwarded.

#[tokio::test]
async fn framing_attacks_get_400_and_reach_nothing() {
    let p = proxy(vec![rule(None, None, None, &[])]).await;
    let attacks: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4, 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\tchunked\x0b\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nX-Pad: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: \x00\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http://evil/ HTTP/1.1\r\nHost: h\r\n\r\n",
        b"CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
        b"GET /v1/../admin HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /v1/%2e%2e/admin HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /v1%2fadmin HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /v1\\admin HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET //v1 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /v1/%65xhaust-port HTTP/1.1\r\nHost: h\r\n\r\n",
        // Bad chunked bodies caught before anything is forwarded.
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;a b\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    ];
    for attack in attacks {
        let mut c = Client::connect(&p).await;
        c.send(attack).await;
        let r = c
            .response()
            .await
            .unwrap_or_else(|| panic!("no response to {:?}", String::from_utf8_lossy(attack)));
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(attack));
        assert_eq!(r.header("connection"), Some("close"));
        assert!(
            c.closed().await,
            "connection left open after {:?}",
            String::from_utf8_lossy(attack)
        );
    }
    // Too large a head: 431.
    let mut c = Client::connect(&p).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    c.send(big.as_bytes()).await;
    assert_eq!(c.response().await.unwrap().status, 431);
    assert_eq!(
        p.upstream.conns(),
        0,
        "{:?}",
        String::from_utf8_lossy(&p.upstream.all_bytes())
    );
    let s = p.stats.snapshot();
    assert_eq!(s.parse_errors as usize, attacks.len() + 1);
    assert_eq!(s.received, s.parse_errors);
    assert_eq!(s.forwarded, 0);
}

#[tokio::test]
async fn smuggled_request_behind_a_valid_one_is_judged_on_its_own() {
    // The classic CL.TE desync: refused outright. And a second request hidden in a body is only
    // ever body bytes, never judged or forwarded as a request.
    let p = proxy(star_wars()).await;
    let hidden = "PUT /v1/exhaust-port HTTP/1.1\r\nHost: d\r\n\r\n";
    let raw = format!(
        "POST /v1/request-landing HTTP/1.1\r\nHost: d\r\nContent-Length: {}\r\n\r\n{hidden}",
        hidden.len()
    );
    let mut c = Client::connect(&p).await;
    c.send(raw.as_bytes()).await;
    assert_eq!(c.response().await.unwrap().status, 200);
    assert_eq!(String::from_utf8_lossy(&p.upstream.all_bytes()), raw);
}

#[tokio::test]
async fn bad_chunk_mid_body_closes_both_sides() {
    let p = proxy(vec![rule(None, None, None, &[])]).await;
    let mut c = Client::connect(&p).await;
    c.send(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        .await;
    sleep(Duration::from_millis(100)).await;
    c.send(b"zz\r\n").await;
    let r = c.response().await.unwrap();
    assert_eq!(r.status, 400);
    assert!(c.closed().await);
    assert_eq!(p.stats.snapshot().parse_errors, 1);
}

// ---------------------------------------------------------------------------------------------
// Upgrades.

#[tokio::test]
async fn upgrades_are_refused_unless_configured() {
    let p = proxy(vec![rule(None, None, None, &[])]).await;
    for raw in [
        "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n",
    ] {
        assert_denied(&one(&p, raw).await);
    }
    assert_eq!(p.upstream.conns(), 0);

    let cfg = ProxyConfig {
        allow_upgrade: true,
        ..test_config()
    };
    let p = proxy_to(
        Upstream::start().await,
        vec![rule(Some("GET"), Some("/ws"), None, &[])],
        cfg,
    )
    .await;
    assert_denied(
        &one(
            &p,
            "GET /other HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await,
    );
    let mut c = Client::connect(&p).await;
    c.send(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await;
    let r = c.response().await.unwrap();
    assert_eq!(r.status, 101);
    c.send(b"hello tunnel").await;
    while c.buf.len() < 12 {
        assert!(c.more().await);
    }
    assert_eq!(&c.buf[..], b"HELLO TUNNEL");
}

// ---------------------------------------------------------------------------------------------
// Upstream failures and timeouts.

#[tokio::test]
async fn upstream_down_gets_503() {
    // Reserve a port, then close it.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let SocketAddr::V4(a) = l.local_addr().unwrap() else {
            unreachable!()
        };
        a
    };
    let upstream = Upstream {
        addr: dead,
        seen: Arc::default(),
    };
    let p = proxy_to(upstream, vec![rule(None, None, None, &[])], test_config()).await;
    let r = one(&p, &get("/v1")).await;
    assert_eq!(r.status, 503);
    let s = p.stats.snapshot();
    assert_eq!(s.upstream_errors, 1);
    let recs = p.records.0.lock().unwrap();
    assert!(
        recs.iter()
            .any(|r| r.verdict == L7Verdict::UpstreamError && r.status == Some(503))
    );
}

#[tokio::test]
async fn upstream_reset_gets_502() {
    let p = proxy(vec![rule(None, None, None, &[])]).await;
    let r = one(&p, &get("/drop")).await;
    assert_eq!(r.status, 502);
    assert_eq!(p.stats.snapshot().upstream_errors, 1);
}

#[tokio::test]
async fn slow_upstream_gets_504() {
    let cfg = ProxyConfig {
        upstream_response_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let p = proxy_to(
        Upstream::start().await,
        vec![rule(None, None, None, &[])],
        cfg,
    )
    .await;
    let r = one(&p, &get("/slow")).await;
    assert_eq!(r.status, 504);
}

#[tokio::test]
async fn slow_head_gets_408_and_idle_connection_closes() {
    let cfg = ProxyConfig {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(500),
        ..test_config()
    };
    let p = proxy_to(
        Upstream::start().await,
        vec![rule(None, None, None, &[])],
        cfg,
    )
    .await;
    let mut c = Client::connect(&p).await;
    c.send(b"GET /v1 HTTP/1.1\r\nHost:").await;
    let r = c.response().await.unwrap();
    assert_eq!(r.status, 408);
    assert!(c.closed().await);
    // Idle keep-alive connection: closed quietly.
    let mut c = Client::connect(&p).await;
    c.send(get("/v1").as_bytes()).await;
    assert_eq!(c.response().await.unwrap().status, 200);
    let t = std::time::Instant::now();
    assert!(c.closed().await);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(p.upstream.all_bytes(), get("/v1").into_bytes());
}

// ---------------------------------------------------------------------------------------------
// Hostile input.

#[tokio::test]
async fn random_bytes_never_crash_or_leak_through() {
    let p = proxy(vec![rule(Some("GET"), Some("/ok"), None, &[])]).await;
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let fragments: &[&[u8]] = &[
        b"GET ",
        b"POST ",
        b"/ok",
        b"/x",
        b" HTTP/1.1",
        b"\r\n",
        b"\n",
        b"Host: h",
        b"Content-Length: 3",
        b"Transfer-Encoding: chunked",
        b": ",
        b" ",
        b"\t",
        b"0\r\n\r\n",
        b"%2e",
        b"..",
        b"\x00",
        b"\xff",
        b"abc",
    ];
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let mut input = Vec::new();
        for _ in 0..(next() % 24) {
            if next() % 4 == 0 {
                input.push(next() as u8);
            } else {
                input.extend_from_slice(fragments[(next() % fragments.len() as u64) as usize]);
            }
        }
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(&input).await;
            let _ = s.shutdown().await;
            let mut out = Vec::new();
            let _ = timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Whatever reached the server must be well-formed requests for GET /ok only.
    let bytes = p.upstream.all_bytes();
    let text = String::from_utf8_lossy(&bytes);
    for line in text.split("\r\n").filter(|l| l.contains(" HTTP/1.")) {
        assert!(
            line.starts_with("GET /ok HTTP/1."),
            "unexpected request line {line:?}"
        );
    }
    // The proxy still works.
    assert_eq!(one(&p, &get("/ok")).await.status, 200);
}

#[tokio::test]
async fn many_concurrent_keep_alive_connections() {
    let p = proxy(star_wars()).await;
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client {
                stream: TcpStream::connect(addr).await.unwrap(),
                buf: Vec::new(),
            };
            for _ in 0..5 {
                c.send(get("/v1").as_bytes()).await;
                assert_eq!(c.response().await.unwrap().status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(p.upstream.conns(), 300);
    assert_eq!(p.stats.snapshot().forwarded, 1500);
}
