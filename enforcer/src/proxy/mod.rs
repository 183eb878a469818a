//! The L7 HTTP/1.1 policy proxy (the part Cilium delegates to Envoy): given an accepted client
//! connection that the datapath steered here and a way to open the upstream connection, it parses
//! each request strictly, asks a [`Judge`], and either forwards the request or answers
//! `403 Access denied` itself.
//!
//! Code map: [`rules`] compiles `rules.http` into matchers; `head` parses and checks message heads;
//! `body` decodes and re-encodes chunked bodies; `conn` runs one client connection; [`stats`]
//! holds the counters.
//!
//! # Invariant: no parser differential
//! The request the policy judges is the request the server receives. The proxy never forwards raw
//! bytes of a request head: it parses the head, refuses anything ambiguous, and re-serialises the
//! judged [`RequestHead`] (method, target, version, and every header in order, as `Name: value`).
//! Bodies are forwarded with the framing that was judged (Content-Length bytes counted, chunked
//! decoded and re-encoded).
//!
//! # What is refused with 400 (the request is never forwarded, the connection is then closed)
//! - Lines not ended by CRLF: a bare LF anywhere in the head is refused (leading empty CRLF lines
//!   before the request line are skipped, as RFC 9112 §2.2 allows).
//! - Obsolete line folding; whitespace between a header name and its colon; control characters
//!   (other than HTAB) in header values; a method that is not a token.
//! - HTTP versions other than 1.0 and 1.1; HTTP/1.1 without `Host`; more than one `Host`; a `Host`
//!   with characters outside the authority syntax (so no userinfo `@`).
//! - Request targets other than origin-form (`/...`): absolute-form, authority-form (`CONNECT`) and
//!   asterisk-form except `OPTIONS *`. Only RFC 3986 path/query characters and well-formed `%HH`.
//! - Framing ambiguity: Content-Length together with Transfer-Encoding; more than one
//!   Content-Length header (even with equal values) or a value that is not 1–19 digits;
//!   Transfer-Encoding other than a single header with exactly `chunked` (case-insensitive), so
//!   `gzip, chunked` is refused too; any Transfer-Encoding in an HTTP/1.0 request.
//! - A head larger than `max_header_bytes` or with more than `max_headers` fields gets 431.
//! - Chunked bodies: a size that is not 1–16 hex digits, whitespace in the size line, malformed
//!   extensions, data not followed by CRLF, malformed trailers. Detected before any body byte is
//!   forwarded → 400; detected mid-body → 400 if no response was sent yet, and both connections are
//!   closed (the upstream got a truncated body it can only treat as an error).
//!
//! # Path normalisation: none, so refuse what servers would normalise
//! The target is matched exactly as it is forwarded. To keep a server from seeing a different
//! path than the one judged, the *path* part (before the first `?`) may not contain `.` or `..`
//! segments, empty segments (`//`), a backslash, or a percent-encoded unreserved character
//! (`%41`, `%2e`, `%7e`…), `/` (`%2F`), `\` (`%5C`) or control byte (`%00`–`%1F`, `%7F`). Other
//! escapes (`%20`, `%C3%A9`, `%3F`…) are allowed and matched in their encoded form. The query is
//! checked for valid characters only. Rules therefore see one spelling per resource.
//!
//! # Connections
//! - The upstream connection is opened lazily, through the [`Connector`], for the first allowed
//!   request, so a server never sees a connection that carried only denied requests. One upstream
//!   connection per client connection; requests are handled one at a time in arrival order, so
//!   pipelined requests (already buffered or not) are each judged and answered in order.
//! - Keep-alive: after an exchange the client connection stays open if the client asked for it
//!   (HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `keep-alive`) and the upstream's
//!   response allows it (so both sides close together). A reused upstream connection found closed
//!   before a request is replaced by a new one.
//! - A denied request without body keeps the connection usable. A denied request with a
//!   Content-Length body of at most 64 KiB (and no `Expect: 100-continue`) has its body read and
//!   discarded, and the connection stays usable; for a larger or chunked body, or one announced
//!   with `Expect: 100-continue`, the 403 carries `connection: close` and the connection closes.
//! - Responses: the head is parsed for framing (Content-Length, chunked, close-delimited; 1xx
//!   interim responses are relayed and the final one awaited; 204, 304 and HEAD have no body) and
//!   relayed byte for byte. Only hop-by-hop change: `connection: close` is appended when the proxy
//!   must close the client connection and the upstream did not say so (an early response to a
//!   request whose body was not fully read). Chunked response bodies are re-encoded the same way as
//!   request bodies (extensions and trailers dropped). A response with both Content-Length and
//!   Transfer-Encoding, or conflicting lengths, is a 502.
//! - `Expect: 100-continue` is forwarded; the upstream's `100 Continue` is relayed while the proxy
//!   waits for the body.
//! - Upgrades (`Upgrade:` header or `Connection: upgrade`, websocket and h2c alike) are refused
//!   with 403 `Access denied` unless the judge allows the request **and**
//!   [`ProxyConfig::allow_upgrade`] is set; then a `101` response switches the connection to an
//!   opaque two-way byte copy.
//! - Upstream failures: connect error or timeout → 503; reset, early close or malformed response
//!   → 502; no response head within `upstream_response_timeout` → 504. Each is recorded as
//!   `UpstreamError`, and the client connection is closed after the error response.
//! - Timeouts: `idle_timeout` while waiting for the first byte of a request and for any progress
//!   while streaming a body; `header_read_timeout` from the first byte of a head to its end (408).
//!   Every generated error closes with a short lingering close, so the client reads the response
//!   instead of a reset.
//!
//! # Observability
//! Every request produces an [`L7Record`] of kind `Request` (verdict Forwarded, Denied or
//! ParseError); every forwarded request then produces one of kind `Response` (Forwarded with
//! status and latency, or UpstreamError). Latency is measured from the end of the request head to
//! the arrival of the final response head. [`ProxyStats`] counts the same events.
//!
//! # Cost (see `examples/proxy_bench.rs`)
//! Per request the proxy makes the four socket calls it cannot avoid (read request, write it
//! upstream, read response, write it back) and no others: writes are tried without a timer, one
//! lazily re-armed timer per connection covers every wait, and an idle upstream is checked for a
//! close from readiness the runtime already has. Judging costs two to three automaton searches,
//! flat in the number of rules. Memory is a few small buffers per connection (about 18 KiB
//! measured with 2,000 connections); bodies stream through 64 KiB windows. Callers should listen
//! with a deep backlog (e.g. 4096): a burst of connects beyond it costs SYN retransmits (1 s).

pub mod rules;
pub mod stats;

mod body;
mod conn;
mod head;

use std::{
    future::Future,
    io,
    net::SocketAddrV4,
    pin::Pin,
    time::{Duration, SystemTime},
};

use tokio::net::TcpStream;

pub use conn::{serve_connection, serve_listener};
pub use head::HeadError;
pub use rules::{CompiledRules, HttpRuleSpec, RuleError, RuleId};
pub use stats::{LATENCY_BUCKETS, ProxyStats, StatsSnapshot};

/// A boxed, sendable future (what [`Connector::connect`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A request head as judged and as forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// Origin-form path including the query string, exactly as forwarded (or `*`).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The `Host` header value (also present in `headers`).
    pub host: Option<String>,
    /// Every header field in order, names as sent, values with surrounding whitespace removed.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    /// All values of the header `name` (case-insensitive).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// The addresses of one steered connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnMeta {
    pub client: SocketAddrV4,
    /// Where the client meant to connect (the transparent socket's local address).
    pub original_dst: SocketAddrV4,
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        rule: RuleId,
    },
    /// `policy_hint`: which policy (or default deny) refused it, for logs and flow records.
    Deny {
        policy_hint: String,
    },
}

/// Decides each request. Implemented by the policy engine; [`CompiledRules`] implements it for
/// one fixed rule set.
pub trait Judge: Send + Sync + 'static {
    fn judge(&self, conn: &ConnMeta, req: &RequestHead) -> Verdict;
}

impl Judge for CompiledRules {
    fn judge(&self, _conn: &ConnMeta, req: &RequestHead) -> Verdict {
        match CompiledRules::judge(self, req) {
            Some(rule) => Verdict::Allow { rule },
            None => Verdict::Deny {
                policy_hint: "no HTTP rule matched".to_owned(),
            },
        }
    }
}

/// Opens the upstream connection for a client connection (the caller makes it transparent and
/// marked so the datapath does not steer it back).
pub trait Connector: Send + Sync + 'static {
    fn connect(&self, conn: &ConnMeta) -> BoxFuture<'static, io::Result<TcpStream>>;
}

/// Connects plainly to `original_dst` (tests, benchmarks, and non-transparent setups).
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectConnector;

impl Connector for DirectConnector {
    fn connect(&self, conn: &ConnMeta) -> BoxFuture<'static, io::Result<TcpStream>> {
        let dst = conn.original_dst;
        Box::pin(async move { TcpStream::connect(dst).await })
    }
}

/// Receives flow records. Called inline on the connection's task: implementations should only
/// hand the record off (a bounded channel, a ring buffer) and never block.
pub trait Observer: Send + Sync + 'static {
    fn record(&self, rec: L7Record);
}

/// Discards every record.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullObserver;

impl Observer for NullObserver {
    fn record(&self, _rec: L7Record) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L7Kind {
    Request,
    Response,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L7Verdict {
    Forwarded,
    Denied,
    ParseError,
    UpstreamError,
}

/// One L7 flow event (Hubble's `l7.http`).
#[derive(Debug, Clone, PartialEq)]
pub struct L7Record {
    pub conn: ConnMeta,
    pub kind: L7Kind,
    /// Empty when the head could not be parsed.
    pub method: String,
    /// The target as judged.
    pub url: String,
    pub host: Option<String>,
    /// The status sent to the client (responses, denials and errors).
    pub status: Option<u16>,
    /// Responses only: end of the request head to the final response head.
    pub latency: Option<Duration>,
    pub verdict: L7Verdict,
    pub rule: Option<RuleId>,
    /// Denied requests: which policy (or default deny) refused it, from [`Verdict::Deny`].
    pub policy_hint: Option<String>,
    pub time: SystemTime,
}

/// Limits and timeouts; see the module documentation for where each applies.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    /// From the end of the request to the final response head.
    pub upstream_response_timeout: Duration,
    pub max_header_bytes: usize,
    /// At most 256 (larger values are clamped).
    pub max_headers: usize,
    /// Forward allowed `Upgrade` requests (websocket, h2c) and splice after `101`.
    pub allow_upgrade: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            allow_upgrade: false,
        }
    }
}
