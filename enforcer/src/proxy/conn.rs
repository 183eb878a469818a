//! One client connection through the proxy: read a request head, judge it, forward it (opening
//! the upstream lazily) or answer 403, relay the response, and repeat while both sides keep the
//! connection alive. Requests are handled strictly one after another, which is what keeps
//! pipelined responses in order.

use std::{
    future::Future,
    io,
    net::{SocketAddr, SocketAddrV4},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, SystemTime},
};

use bytes::{Buf, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::{Instant, Sleep, sleep, sleep_until, timeout},
};

use super::{
    ConnMeta, Connector, Judge, L7Kind, L7Record, L7Verdict, Observer, ProxyConfig, ProxyStats,
    RequestHead, RuleId, Verdict,
    body::{ChunkError, ChunkedDecoder},
    head::{self, HeadError, ParsedRequest, RequestBody, ResponseBody},
};

/// Spare room kept in a buffer before reading a head.
const HEAD_READ: usize = 8 * 1024;
/// Spare room kept in a buffer before reading body bytes.
const BODY_READ: usize = 64 * 1024;
/// A denied request's Content-Length body up to this size is read and discarded so the
/// connection stays usable.
const DENY_DRAIN_LIMIT: u64 = 64 * 1024;
/// Lingering close: after our last response, read and discard for at most this long / this much
/// so the client sees the response rather than a reset.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

struct Shared {
    judge: Arc<dyn Judge>,
    connector: Arc<dyn Connector>,
    observer: Arc<dyn Observer>,
    stats: Arc<ProxyStats>,
    cfg: Arc<ProxyConfig>,
}

struct Upstream {
    stream: TcpStream,
    buf: BytesMut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailKind {
    /// Malformed request body (counted as a parse error).
    Parse,
    /// The upstream failed (counted as an upstream error).
    Upstream,
    /// The client was too slow.
    Timeout,
    /// The client went away or reset.
    Client,
}

/// A request that could not be completed. `status`: the error response to send, if no response
/// bytes for this request reached the client yet.
#[derive(Debug, Clone, Copy)]
struct Fail {
    status: Option<u16>,
    kind: FailKind,
}

impl Fail {
    fn respond(status: u16, kind: FailKind) -> Self {
        Self {
            status: Some(status),
            kind,
        }
    }
    fn abort(kind: FailKind) -> Self {
        Self { status: None, kind }
    }
}

enum ReadFail {
    Head(HeadError),
    Timeout,
}

/// Request body framing while it is being forwarded.
enum BodyState {
    Done,
    Length(u64),
    Chunked(ChunkedDecoder),
}

impl BodyState {
    fn is_done(&self) -> bool {
        match self {
            BodyState::Done => true,
            BodyState::Length(n) => *n == 0,
            BodyState::Chunked(d) => d.is_done(),
        }
    }

    /// Moves as much body as `src` holds into `out` (re-encoded for chunked).
    fn take(&mut self, src: &mut BytesMut, out: &mut BytesMut) -> Result<(), ChunkError> {
        match self {
            BodyState::Done => {}
            BodyState::Length(n) => {
                let k = (*n).min(src.len() as u64) as usize;
                out.extend_from_slice(&src[..k]);
                src.advance(k);
                *n -= k as u64;
            }
            BodyState::Chunked(d) => {
                let used = d.decode(src, out)?;
                src.advance(used);
            }
        }
        Ok(())
    }
}

enum BodyEnd {
    Complete,
    /// The upstream sent a final response before the body was complete.
    EarlyResponse,
}

fn status_text(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("Bad Request", "Bad Request\r\n"),
        403 => ("Forbidden", "Access denied\r\n"),
        408 => ("Request Timeout", "Request Timeout\r\n"),
        431 => (
            "Request Header Fields Too Large",
            "Request Header Fields Too Large\r\n",
        ),
        502 => ("Bad Gateway", "upstream reset or malformed response\r\n"),
        503 => ("Service Unavailable", "upstream connect error\r\n"),
        504 => ("Gateway Timeout", "upstream request timeout\r\n"),
        _ => ("Error", "Error\r\n"),
    }
}

/// Writes all of `data`, trying once without a timer first (the common case on the hot path).
async fn write_all_timed(
    stream: &mut TcpStream,
    mut data: &[u8],
    limit: Duration,
) -> io::Result<()> {
    match stream.try_write(data) {
        Ok(n) if n == data.len() => return Ok(()),
        Ok(n) => data = &data[n..],
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    match timeout(limit, stream.write_all(data)).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Runs `fut` until `deadline` (`None` when the deadline passed first). One timer per connection
/// serves every wait: it is re-armed only when it must fire sooner than it is set to, or when it
/// fires before the current deadline, so the hot path registers no timer at all.
async fn until<F: Future>(
    timer: &mut Pin<Box<Sleep>>,
    deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            biased;
            r = &mut fut => return Some(r),
            () = timer.as_mut() => {
                if Instant::now() >= deadline {
                    return None;
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

/// Reads into `buf` (growing its spare room to `room`) until `deadline`.
/// `Ok(0)`: end of stream. Deadline passed → `Err(TimedOut)`.
async fn read_timed(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    room: usize,
    timer: &mut Pin<Box<Sleep>>,
    deadline: Instant,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < room / 2 {
        buf.reserve(room);
    }
    match until(timer, deadline, stream.read_buf(buf)).await {
        Some(r) => r,
        None => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Whether an idle upstream connection can carry another request: not closed, nothing unread.
/// Looks only at readiness the runtime already knows, so it costs no syscall when idle.
fn upstream_reusable(up: &mut Upstream) -> bool {
    if !up.buf.is_empty() {
        return false;
    }
    let mut cx = Context::from_waker(Waker::noop());
    match up.stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(up.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// Serves one steered client connection until it closes. Never panics on input; all errors end
/// in an HTTP error response where one can still be sent, then a close.
pub async fn serve_connection(
    client: TcpStream,
    meta: ConnMeta,
    judge: Arc<dyn Judge>,
    connector: Arc<dyn Connector>,
    observer: Arc<dyn Observer>,
    stats: Arc<ProxyStats>,
    cfg: Arc<ProxyConfig>,
) {
    let _ = client.set_nodelay(true);
    let mut conn = Conn {
        client,
        meta,
        timer: Box::pin(sleep_until(Instant::now() + cfg.idle_timeout)),
        req_time: SystemTime::UNIX_EPOCH,
        cbuf: BytesMut::with_capacity(HEAD_READ),
        out: BytesMut::new(),
        up: None,
        sh: Shared {
            judge,
            connector,
            observer,
            stats,
            cfg,
        },
    };
    conn.run().await;
}

/// Accepts connections forever and serves each on its own task. `original_dst` says where a
/// client meant to connect (for a transparent socket, its local address). Accept errors (such
/// as running out of file descriptors) are logged and retried after a short pause.
pub async fn serve_listener<F>(
    listener: TcpListener,
    original_dst: F,
    judge: Arc<dyn Judge>,
    connector: Arc<dyn Connector>,
    observer: Arc<dyn Observer>,
    stats: Arc<ProxyStats>,
    cfg: Arc<ProxyConfig>,
) where
    F: Fn(&TcpStream) -> io::Result<SocketAddrV4> + Send + Sync + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "proxy accept failed; retrying");
                sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let client = match peer {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                Some(ip) => SocketAddrV4::new(ip, a.port()),
                None => continue,
            },
        };
        let dst = match original_dst(&stream) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, %client, "no original destination; dropping connection");
                continue;
            }
        };
        let meta = ConnMeta {
            client,
            original_dst: dst,
        };
        tokio::spawn(serve_connection(
            stream,
            meta,
            judge.clone(),
            connector.clone(),
            observer.clone(),
            stats.clone(),
            cfg.clone(),
        ));
    }
}

struct Conn {
    client: TcpStream,
    meta: ConnMeta,
    /// Bytes read from the client and not yet consumed.
    cbuf: BytesMut,
    /// Bytes being assembled for one write.
    out: BytesMut,
    up: Option<Upstream>,
    /// The one timer behind every wait on this connection (see [`until`]).
    timer: Pin<Box<Sleep>>,
    /// Wall-clock time the current request head was parsed (flow records).
    req_time: SystemTime,
    sh: Shared,
}

impl Conn {
    async fn run(&mut self) {
        loop {
            let parsed = match self.read_request().await {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(ReadFail::Timeout) => {
                    self.sh.stats.inc_timeouts();
                    self.send_error(408).await;
                    return;
                }
                Err(ReadFail::Head(e)) => {
                    self.sh.stats.inc_received();
                    self.sh.stats.inc_parse_errors();
                    let status = if e == HeadError::TooLarge { 431 } else { 400 };
                    tracing::debug!(client = %self.meta.client, error = %e, "refused request head");
                    self.observe_raw(L7Kind::Request, L7Verdict::ParseError, Some(status));
                    self.send_error(status).await;
                    return;
                }
            };
            self.sh.stats.inc_received();
            let started = Instant::now();
            self.req_time = SystemTime::now();
            let verdict = self.sh.judge.judge(&self.meta, &parsed.head);
            let flow = match verdict {
                Verdict::Allow { rule } if !parsed.upgrade || self.sh.cfg.allow_upgrade => {
                    self.forward(parsed, rule, started).await
                }
                Verdict::Allow { .. } => {
                    let hint = "upgrade requests are not proxied (allow_upgrade is off)";
                    self.deny(parsed, hint.to_owned()).await
                }
                Verdict::Deny { policy_hint } => self.deny(parsed, policy_hint).await,
            };
            if flow == Flow::Close {
                return;
            }
        }
    }

    fn observe(
        &self,
        kind: L7Kind,
        head: &RequestHead,
        verdict: L7Verdict,
        status: Option<u16>,
        latency: Option<Duration>,
        rule: Option<RuleId>,
    ) {
        self.sh.observer.record(L7Record {
            conn: self.meta,
            kind,
            method: head.method.clone(),
            url: head.target.clone(),
            host: head.host.clone(),
            status,
            latency,
            verdict,
            rule,
            policy_hint: None,
            time: match (kind, latency) {
                (L7Kind::Response, Some(l)) => self.req_time + l,
                _ => self.req_time,
            },
        });
    }

    fn observe_raw(&self, kind: L7Kind, verdict: L7Verdict, status: Option<u16>) {
        self.sh.observer.record(L7Record {
            conn: self.meta,
            kind,
            method: String::new(),
            url: String::new(),
            host: None,
            status,
            latency: None,
            verdict,
            rule: None,
            policy_hint: None,
            time: SystemTime::now(),
        });
    }

    /// Reads the next request head. `Ok(None)`: the client closed or stayed idle too long.
    async fn read_request(&mut self) -> Result<Option<ParsedRequest>, ReadFail> {
        let cfg = self.sh.cfg.clone();
        let mut scanned = 0;
        let mut deadline: Option<Instant> = None;
        let idle_deadline = Instant::now() + cfg.idle_timeout;
        loop {
            while self.cbuf.starts_with(b"\r\n") {
                self.cbuf.advance(2);
                scanned = 0;
            }
            if !self.cbuf.is_empty() && deadline.is_none() {
                deadline = Some(Instant::now() + cfg.header_read_timeout);
            }
            match head::find_head_end(&self.cbuf, &mut scanned) {
                Err(e) => return Err(ReadFail::Head(e)),
                Ok(Some(end)) => {
                    if end > cfg.max_header_bytes {
                        return Err(ReadFail::Head(HeadError::TooLarge));
                    }
                    let parsed = head::parse_request(&self.cbuf[..end], cfg.max_headers)
                        .map_err(ReadFail::Head)?;
                    self.cbuf.advance(end);
                    return Ok(Some(parsed));
                }
                Ok(None) if self.cbuf.len() > cfg.max_header_bytes => {
                    return Err(ReadFail::Head(HeadError::TooLarge));
                }
                Ok(None) => {}
            }
            let wait = deadline.unwrap_or(idle_deadline);
            match read_timed(
                &mut self.client,
                &mut self.cbuf,
                HEAD_READ,
                &mut self.timer,
                wait,
            )
            .await
            {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut && deadline.is_some() => {
                    return Err(ReadFail::Timeout);
                }
                Err(_) => return Ok(None),
            }
        }
    }

    /// Answers a denied request with 403, keeping the connection when framing allows.
    async fn deny(&mut self, p: ParsedRequest, policy_hint: String) -> Flow {
        self.sh.stats.inc_denied();
        self.sh.observer.record(L7Record {
            conn: self.meta,
            kind: L7Kind::Request,
            method: p.head.method.clone(),
            url: p.head.target.clone(),
            host: p.head.host.clone(),
            status: Some(403),
            latency: None,
            verdict: L7Verdict::Denied,
            rule: None,
            policy_hint: Some(policy_hint),
            time: self.req_time,
        });
        let mut keep = p.keep_alive;
        match p.body {
            RequestBody::None => {}
            RequestBody::Length(n) if n <= DENY_DRAIN_LIMIT && !p.expect_continue => {
                if !self.discard(n).await {
                    return Flow::Close;
                }
            }
            _ => keep = false,
        }
        self.out.clear();
        let (reason, body) = status_text(403);
        head::canned(
            &mut self.out,
            403,
            reason,
            body,
            !keep,
            keep && p.head.version == 0,
        );
        if write_all_timed(&mut self.client, &self.out, self.sh.cfg.idle_timeout)
            .await
            .is_err()
        {
            return Flow::Close;
        }
        if keep {
            Flow::Continue
        } else {
            self.linger_close().await;
            Flow::Close
        }
    }

    /// Reads and drops `n` body bytes. False if the client went away or was too slow.
    async fn discard(&mut self, mut n: u64) -> bool {
        loop {
            let k = n.min(self.cbuf.len() as u64) as usize;
            self.cbuf.advance(k);
            n -= k as u64;
            if n == 0 {
                return true;
            }
            let deadline = Instant::now() + self.sh.cfg.idle_timeout;
            match read_timed(
                &mut self.client,
                &mut self.cbuf,
                HEAD_READ,
                &mut self.timer,
                deadline,
            )
            .await
            {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    }

    /// Sends a generated error response with `connection: close`, then closes.
    async fn send_error(&mut self, status: u16) {
        self.out.clear();
        let (reason, body) = status_text(status);
        head::canned(&mut self.out, status, reason, body, true, false);
        if write_all_timed(&mut self.client, &self.out, self.sh.cfg.idle_timeout)
            .await
            .is_ok()
        {
            self.linger_close().await;
        }
    }

    /// Half-closes towards the client and reads what it still sends for a short while, so the
    /// client gets our last response instead of a reset.
    async fn linger_close(&mut self) {
        self.up = None;
        let _ = self.client.shutdown().await;
        let deadline = Instant::now() + LINGER_TIME;
        let mut drained = 0;
        while drained < LINGER_BYTES {
            self.cbuf.clear();
            match read_timed(
                &mut self.client,
                &mut self.cbuf,
                HEAD_READ,
                &mut self.timer,
                deadline,
            )
            .await
            {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }

    /// Ends a request that failed: counts it, records it, sends an error response if none has
    /// started, and closes both connections.
    async fn fail(&mut self, head: &RequestHead, rule: RuleId, f: Fail) -> Flow {
        match f.kind {
            FailKind::Parse => {
                self.sh.stats.inc_parse_errors();
                self.observe(
                    L7Kind::Request,
                    head,
                    L7Verdict::ParseError,
                    f.status,
                    None,
                    Some(rule),
                );
            }
            FailKind::Upstream => {
                self.sh.stats.inc_upstream_errors();
                self.observe(
                    L7Kind::Response,
                    head,
                    L7Verdict::UpstreamError,
                    f.status,
                    None,
                    Some(rule),
                );
            }
            FailKind::Timeout => self.sh.stats.inc_timeouts(),
            FailKind::Client => {}
        }
        self.up = None;
        match f.status {
            Some(status) => self.send_error(status).await,
            None => {
                let _ = self.client.shutdown().await;
            }
        }
        Flow::Close
    }

    /// Forwards an allowed request and relays its response.
    async fn forward(&mut self, p: ParsedRequest, rule: RuleId, started: Instant) -> Flow {
        let ParsedRequest {
            head,
            body,
            keep_alive,
            upgrade,
            ..
        } = p;
        let cfg = self.sh.cfg.clone();
        // Assemble head and whatever body is already buffered; a body error found here means
        // nothing at all goes upstream.
        self.out.clear();
        head::serialise_request(&head, &mut self.out);
        let mut framing = match body {
            RequestBody::None => BodyState::Done,
            RequestBody::Length(n) => BodyState::Length(n),
            RequestBody::Chunked => BodyState::Chunked(ChunkedDecoder::new(cfg.max_header_bytes)),
        };
        if framing.take(&mut self.cbuf, &mut self.out).is_err() {
            return self
                .fail(&head, rule, Fail::respond(400, FailKind::Parse))
                .await;
        }
        self.observe(
            L7Kind::Request,
            &head,
            L7Verdict::Forwarded,
            None,
            None,
            Some(rule),
        );

        if let Some(up) = &mut self.up
            && !upstream_reusable(up)
        {
            self.up = None;
        }
        if self.up.is_none() {
            let connect = self.sh.connector.connect(&self.meta);
            match timeout(cfg.upstream_connect_timeout, connect).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    self.up = Some(Upstream {
                        stream,
                        buf: BytesMut::with_capacity(HEAD_READ),
                    });
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, dst = %self.meta.original_dst, "upstream connect failed");
                    return self
                        .fail(&head, rule, Fail::respond(503, FailKind::Upstream))
                        .await;
                }
                Err(_) => {
                    return self
                        .fail(&head, rule, Fail::respond(503, FailKind::Upstream))
                        .await;
                }
            }
        }
        self.sh.stats.inc_forwarded();
        let up = self.up.as_mut().expect("upstream just ensured");
        if write_all_timed(&mut up.stream, &self.out, cfg.idle_timeout)
            .await
            .is_err()
        {
            return self
                .fail(&head, rule, Fail::respond(502, FailKind::Upstream))
                .await;
        }
        let mut early = false;
        if !framing.is_done() {
            match self.stream_request_body(&mut framing).await {
                Ok(BodyEnd::Complete) => {}
                Ok(BodyEnd::EarlyResponse) => early = true,
                Err(f) => return self.fail(&head, rule, f).await,
            }
        }
        match self
            .relay_response(&head, rule, started, keep_alive && !early, early, upgrade)
            .await
        {
            Ok(flow) => flow,
            Err(f) => self.fail(&head, rule, f).await,
        }
    }

    /// Streams the rest of a request body to the upstream, watching the upstream meanwhile for
    /// interim responses (relayed) or an early final response (stops the body).
    async fn stream_request_body(&mut self, framing: &mut BodyState) -> Result<BodyEnd, Fail> {
        let cfg = self.sh.cfg.clone();
        loop {
            if self.cbuf.capacity() - self.cbuf.len() < BODY_READ / 2 {
                self.cbuf.reserve(BODY_READ);
            }
            let up = self.up.as_mut().expect("upstream open while streaming");
            if up.buf.capacity() - up.buf.len() < HEAD_READ / 2 {
                up.buf.reserve(HEAD_READ);
            }
            let deadline = Instant::now() + cfg.idle_timeout;
            if self.timer.deadline() > deadline {
                self.timer.as_mut().reset(deadline);
            }
            tokio::select! {
                r = self.client.read_buf(&mut self.cbuf) => match r {
                    Ok(0) | Err(_) => return Err(Fail::abort(FailKind::Client)),
                    Ok(_) => {
                        self.out.clear();
                        if framing.take(&mut self.cbuf, &mut self.out).is_err() {
                            return Err(Fail::respond(400, FailKind::Parse));
                        }
                        if write_all_timed(&mut up.stream, &self.out, cfg.idle_timeout).await.is_err() {
                            return Err(Fail::respond(502, FailKind::Upstream));
                        }
                        if framing.is_done() {
                            return Ok(BodyEnd::Complete);
                        }
                    }
                },
                r = up.stream.read_buf(&mut up.buf) => match r {
                    Ok(0) | Err(_) => return Err(Fail::respond(502, FailKind::Upstream)),
                    Ok(_) => loop {
                        match head::parse_response(&up.buf, cfg.max_header_bytes, cfg.max_headers, false) {
                            Ok(None) => break,
                            Err(_) => return Err(Fail::respond(502, FailKind::Upstream)),
                            Ok(Some(r)) if (100..200).contains(&r.status) && r.status != 101 => {
                                if write_all_timed(&mut self.client, &up.buf[..r.len], cfg.idle_timeout).await.is_err() {
                                    return Err(Fail::abort(FailKind::Client));
                                }
                                up.buf.advance(r.len);
                            }
                            Ok(Some(_)) => return Ok(BodyEnd::EarlyResponse),
                        }
                    },
                },
                () = self.timer.as_mut() => {
                    if Instant::now() >= deadline {
                        return Err(Fail::respond(408, FailKind::Timeout));
                    }
                    self.timer.as_mut().reset(deadline);
                }
            }
        }
    }

    /// Reads the response (interim ones included) and streams it to the client.
    async fn relay_response(
        &mut self,
        head: &RequestHead,
        rule: RuleId,
        started: Instant,
        keep_alive: bool,
        must_close: bool,
        upgrade: bool,
    ) -> Result<Flow, Fail> {
        let cfg = self.sh.cfg.clone();
        let is_head = head.method == "HEAD";
        let deadline = started + cfg.upstream_response_timeout;
        let mut sent_interim = false;
        let resp = loop {
            let up = self.up.as_mut().expect("upstream open while relaying");
            match head::parse_response(&up.buf, cfg.max_header_bytes, cfg.max_headers, is_head) {
                Err(e) => {
                    tracing::debug!(error = e, "bad upstream response");
                    return Err(Fail::respond(502, FailKind::Upstream));
                }
                Ok(Some(r)) if r.status == 101 => {
                    if !upgrade {
                        return Err(Fail::respond(502, FailKind::Upstream));
                    }
                    return Ok(self.splice(r.len, head, rule, started).await);
                }
                Ok(Some(r)) if (100..200).contains(&r.status) => {
                    if write_all_timed(&mut self.client, &up.buf[..r.len], cfg.idle_timeout)
                        .await
                        .is_err()
                    {
                        return Err(Fail::abort(FailKind::Client));
                    }
                    up.buf.advance(r.len);
                    sent_interim = true;
                }
                Ok(Some(r)) => break r,
                Ok(None) => {
                    let err_status = |s| if sent_interim { None } else { Some(s) };
                    match read_timed(
                        &mut up.stream,
                        &mut up.buf,
                        HEAD_READ,
                        &mut self.timer,
                        deadline,
                    )
                    .await
                    {
                        Ok(0) => {
                            return Err(Fail {
                                status: err_status(502),
                                kind: FailKind::Upstream,
                            });
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            return Err(Fail {
                                status: err_status(504),
                                kind: FailKind::Upstream,
                            });
                        }
                        Err(_) => {
                            return Err(Fail {
                                status: err_status(502),
                                kind: FailKind::Upstream,
                            });
                        }
                    }
                }
            }
        };
        let latency = started.elapsed();
        self.sh.stats.observe_latency(latency);
        self.observe(
            L7Kind::Response,
            head,
            L7Verdict::Forwarded,
            Some(resp.status),
            Some(latency),
            Some(rule),
        );

        let keep = keep_alive && resp.keep_alive;
        let up = self.up.as_mut().expect("upstream open while relaying");
        self.out.clear();
        if must_close && !resp.says_close {
            head::response_head_with_close(&up.buf[..resp.len], &mut self.out);
        } else {
            self.out.extend_from_slice(&up.buf[..resp.len]);
        }
        up.buf.advance(resp.len);
        let mut framing = match resp.body {
            ResponseBody::None => BodyState::Done,
            ResponseBody::Length(n) => BodyState::Length(n),
            ResponseBody::Chunked => BodyState::Chunked(ChunkedDecoder::new(cfg.max_header_bytes)),
            ResponseBody::Close => BodyState::Length(u64::MAX),
        };
        let close_delimited = resp.body == ResponseBody::Close;
        let client_err = Fail::abort(FailKind::Client);
        let upstream_err = Fail::abort(FailKind::Upstream);
        loop {
            if framing.take(&mut up.buf, &mut self.out).is_err() {
                return Err(upstream_err);
            }
            if !self.out.is_empty() {
                if write_all_timed(&mut self.client, &self.out, cfg.idle_timeout)
                    .await
                    .is_err()
                {
                    return Err(client_err);
                }
                self.out.clear();
            }
            if framing.is_done() {
                break;
            }
            let deadline = Instant::now() + cfg.idle_timeout;
            match read_timed(
                &mut up.stream,
                &mut up.buf,
                BODY_READ,
                &mut self.timer,
                deadline,
            )
            .await
            {
                Ok(0) if close_delimited => break,
                Ok(0) | Err(_) => return Err(upstream_err),
                Ok(_) => {}
            }
        }
        if !up.buf.is_empty() {
            // Bytes after the response that nobody asked for: this connection is unusable.
            self.up = None;
        }
        if keep {
            Ok(Flow::Continue)
        } else {
            self.up = None;
            if must_close {
                self.linger_close().await;
            } else {
                let _ = self.client.shutdown().await;
            }
            Ok(Flow::Close)
        }
    }

    /// After `101 Switching Protocols`: relay the head, then copy bytes both ways until either
    /// side closes.
    async fn splice(
        &mut self,
        head_len: usize,
        head: &RequestHead,
        rule: RuleId,
        started: Instant,
    ) -> Flow {
        let cfg = self.sh.cfg.clone();
        let latency = started.elapsed();
        self.sh.stats.observe_latency(latency);
        self.observe(
            L7Kind::Response,
            head,
            L7Verdict::Forwarded,
            Some(101),
            Some(latency),
            Some(rule),
        );
        let Some(mut up) = self.up.take() else {
            return Flow::Close;
        };
        debug_assert!(head_len <= up.buf.len());
        if write_all_timed(&mut self.client, &up.buf, cfg.idle_timeout)
            .await
            .is_err()
        {
            return Flow::Close;
        }
        if !self.cbuf.is_empty()
            && write_all_timed(&mut up.stream, &self.cbuf, cfg.idle_timeout)
                .await
                .is_err()
        {
            return Flow::Close;
        }
        self.cbuf.clear();
        let _ = tokio::io::copy_bidirectional(&mut self.client, &mut up.stream).await;
        Flow::Close
    }
}
