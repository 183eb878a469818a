//! Strict parsing of HTTP/1.x message heads: requests (judged, then re-serialised to the upstream)
//! and responses (parsed only to learn their framing, then relayed byte for byte).
//!
//! `httparse` does the tokenising; everything it is lenient about is checked here (see the module
//! documentation of [`super`] for the full list of what is rejected and why).

use std::{fmt::Write as _, mem::MaybeUninit};

use bytes::BytesMut;

use super::RequestHead;

/// Upper bound on the number of header slots handed to `httparse` (stack array).
const HEADER_SLOTS: usize = 256;

/// Why a request head was refused. Every variant is answered with 400 except `TooLarge` (431).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The head (or the number of header fields) is over the configured limit.
    TooLarge,
    /// Malformed or ambiguous; the reason is a short fixed text for logs and tests.
    Bad(&'static str),
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::TooLarge => f.write_str("request head too large"),
            HeadError::Bad(why) => f.write_str(why),
        }
    }
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    Chunked,
}

/// A request head that passed every check.
#[derive(Debug)]
pub struct ParsedRequest {
    pub head: RequestHead,
    pub body: RequestBody,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// `Upgrade` header present or `Connection: upgrade`.
    pub upgrade: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    Close,
}

/// A response head, with the number of bytes it occupies in the buffer.
#[derive(Debug, Clone, Copy)]
pub struct ParsedResponse {
    pub status: u16,
    pub len: usize,
    pub body: ResponseBody,
    /// The upstream keeps the connection open after this response.
    pub keep_alive: bool,
    /// A `Connection: close` token was present (so no need to add one).
    pub says_close: bool,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// pchar minus `%` plus `/` and `?`: the literal bytes allowed in origin-form.
fn is_target_char(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,;=:@/?".contains(&b)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Validates an origin-form request target (or `*` for OPTIONS). See the module docs of
/// [`super`] for the rules; the target is forwarded exactly as validated.
pub fn check_target(method: &str, target: &str) -> Result<(), HeadError> {
    let t = target.as_bytes();
    if t == b"*" {
        return if method == "OPTIONS" {
            Ok(())
        } else {
            Err(HeadError::Bad("asterisk-form target outside OPTIONS"))
        };
    }
    if t.first() != Some(&b'/') {
        return Err(HeadError::Bad("request target is not origin-form"));
    }
    let path_end = t.iter().position(|&b| b == b'?').unwrap_or(t.len());
    let mut i = 0;
    while i < t.len() {
        let b = t[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                t.get(i + 1).copied().and_then(hex_val),
                t.get(i + 2).copied().and_then(hex_val),
            ) else {
                return Err(HeadError::Bad("bad percent-encoding in target"));
            };
            let decoded = h << 4 | l;
            if i < path_end
                && (is_unreserved(decoded)
                    || decoded == b'/'
                    || decoded == b'\\'
                    || decoded < 0x20
                    || decoded == 0x7f)
            {
                return Err(HeadError::Bad(
                    "percent-encoded unreserved, slash, backslash or control byte in path",
                ));
            }
            i += 3;
            continue;
        }
        if !is_target_char(b) {
            return Err(HeadError::Bad("character not allowed in request target"));
        }
        i += 1;
    }
    // Dot-segments and empty segments in the path: servers normalise them differently.
    let path = &t[..path_end];
    let mut segments = path.split(|&b| b == b'/').skip(1).peekable();
    while let Some(seg) = segments.next() {
        if seg == b"." || seg == b".." {
            return Err(HeadError::Bad("dot-segment in path"));
        }
        if seg.is_empty() && segments.peek().is_some() {
            return Err(HeadError::Bad("empty segment (//) in path"));
        }
    }
    Ok(())
}

/// Comma-separated list elements of a header value, trimmed.
fn list_items(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(|item| item.trim_ascii())
        .filter(|item| !item.is_empty())
}

fn has_token(v: &[u8], token: &str) -> bool {
    list_items(v).any(|i| i.eq_ignore_ascii_case(token.as_bytes()))
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn is_host_char(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,;=:[]%".contains(&b)
}

/// Finds the end of a request head in `buf` (index just past `\r\n\r\n`), scanning from
/// `*scanned`. Rejects a bare LF as soon as it is seen.
pub fn find_head_end(buf: &[u8], scanned: &mut usize) -> Result<Option<usize>, HeadError> {
    let mut i = *scanned;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let lf = i + off;
        if lf == 0 || buf[lf - 1] != b'\r' {
            return Err(HeadError::Bad("bare LF line ending"));
        }
        if lf >= 3 && buf[lf - 2] == b'\n' && buf[lf - 3] == b'\r' {
            *scanned = lf + 1;
            return Ok(Some(lf + 1));
        }
        i = lf + 1;
    }
    *scanned = buf.len();
    Ok(None)
}

/// Parses and validates a complete request head (`head` ends with the empty line).
pub fn parse_request(head: &[u8], max_headers: usize) -> Result<ParsedRequest, HeadError> {
    // Uninitialised slots: zeroing 256 headers per request showed up in profiles.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADER_SLOTS];
    let slots = &mut slots[..max_headers.clamp(1, HEADER_SLOTS)];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, slots) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(HeadError::Bad("incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(HeadError::Bad("unsupported HTTP version")),
        Err(httparse::Error::Token) => {
            return Err(HeadError::Bad("invalid method or request line"));
        }
        Err(httparse::Error::HeaderName) => return Err(HeadError::Bad("invalid header name")),
        Err(httparse::Error::HeaderValue) => return Err(HeadError::Bad("invalid header value")),
        Err(_) => return Err(HeadError::Bad("malformed request head")),
    }
    // httparse tolerates some things we do not; check the raw lines too.
    for (i, w) in head.windows(3).enumerate() {
        if w[0] == b'\r' && w[1] == b'\n' && (w[2] == b' ' || w[2] == b'\t') && i + 3 < head.len() {
            return Err(HeadError::Bad("obsolete line folding"));
        }
    }
    let method = req.method.unwrap_or_default();
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(HeadError::Bad("invalid method"));
    }
    if method == "CONNECT" {
        return Err(HeadError::Bad("CONNECT (authority-form) is not proxied"));
    }
    let target = req.path.unwrap_or_default();
    check_target(method, target)?;
    let version = req.version.unwrap_or(255);
    if version > 1 {
        return Err(HeadError::Bad("unsupported HTTP version"));
    }

    let mut headers = Vec::with_capacity(req.headers.len());
    let mut host: Option<String> = None;
    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut cl_count = 0;
    let mut te_count = 0;
    let mut te_chunked = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut upgrade = false;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name;
        let value = h.value;
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(HeadError::Bad("invalid header name"));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(HeadError::Bad("control character in header value"));
        }
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if !value.iter().all(|&b| is_host_char(b)) {
                return Err(HeadError::Bad("invalid Host"));
            }
            // All bytes are ASCII after the check above.
            host = Some(String::from_utf8_lossy(value).into_owned());
        } else if name.eq_ignore_ascii_case("content-length") {
            cl_count += 1;
            content_length =
                Some(parse_content_length(value).ok_or(HeadError::Bad("invalid Content-Length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te_count += 1;
            te_chunked = value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close |= has_token(value, "close");
            keep_alive_token |= has_token(value, "keep-alive");
            upgrade |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        }
        headers.push((name.to_owned(), value.to_vec()));
    }
    if hosts > 1 {
        return Err(HeadError::Bad("more than one Host"));
    }
    if version == 1 && hosts == 0 {
        return Err(HeadError::Bad("HTTP/1.1 request without Host"));
    }
    if cl_count > 1 {
        return Err(HeadError::Bad("more than one Content-Length"));
    }
    if te_count > 0 && cl_count > 0 {
        return Err(HeadError::Bad("both Content-Length and Transfer-Encoding"));
    }
    if te_count > 0 && version == 0 {
        return Err(HeadError::Bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    if te_count > 1 || (te_count == 1 && !te_chunked) {
        return Err(HeadError::Bad(
            "Transfer-Encoding other than a single chunked",
        ));
    }
    let body = if te_count == 1 {
        RequestBody::Chunked
    } else {
        match content_length {
            Some(0) | None => RequestBody::None,
            Some(n) => RequestBody::Length(n),
        }
    };
    let keep_alive = if version == 1 {
        !close
    } else {
        keep_alive_token && !close
    };
    Ok(ParsedRequest {
        head: RequestHead {
            method: method.to_owned(),
            target: target.to_owned(),
            version,
            host,
            headers,
        },
        body,
        keep_alive,
        upgrade,
        expect_continue,
    })
}

/// Writes the head exactly as judged: request line, then each header as `Name: value`.
pub fn serialise_request(head: &RequestHead, out: &mut BytesMut) {
    let len = head.method.len()
        + head.target.len()
        + 14
        + head
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
        + 2;
    out.reserve(len);
    out.extend_from_slice(head.method.as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(if head.version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for (name, value) in &head.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Parses a response head at the start of `buf`. `Ok(None)`: incomplete.
/// `head_request`: the request was HEAD, so the response has no body.
pub fn parse_response(
    buf: &[u8],
    max_header_bytes: usize,
    max_headers: usize,
    head_request: bool,
) -> Result<Option<ParsedResponse>, &'static str> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADER_SLOTS];
    let slots = &mut slots[..max_headers.clamp(1, HEADER_SLOTS)];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_header_bytes {
                Err("response head too large")
            } else {
                Ok(None)
            };
        }
        Err(_) => return Err("malformed response head"),
    };
    if len > max_header_bytes {
        return Err("response head too large");
    }
    let status = resp.code.unwrap_or(0);
    let version = resp.version.unwrap_or(1);
    let mut lengths: Option<u64> = None;
    let mut te: Option<bool> = None; // Some(final coding is chunked)
    let mut close = false;
    let mut keep_alive_token = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            // A list of identical values is tolerated in responses (RFC 9110 §8.6).
            for item in h.value.split(|&b| b == b',') {
                let n = parse_content_length(item.trim_ascii()).ok_or("invalid Content-Length")?;
                if lengths.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length");
                }
                lengths = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = list_items(h.value).last();
            te = Some(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= has_token(h.value, "close");
            keep_alive_token |= has_token(h.value, "keep-alive");
        }
    }
    if te.is_some() && lengths.is_some() {
        return Err("both Content-Length and Transfer-Encoding in response");
    }
    let body = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        ResponseBody::None
    } else {
        match (te, lengths) {
            (Some(true), _) => ResponseBody::Chunked,
            (Some(false), _) => ResponseBody::Close,
            (None, Some(n)) => ResponseBody::Length(n),
            (None, None) => ResponseBody::Close,
        }
    };
    let keep_alive = body != ResponseBody::Close
        && if version == 1 {
            !close
        } else {
            keep_alive_token && !close
        };
    Ok(Some(ParsedResponse {
        status,
        len,
        body,
        keep_alive,
        says_close: close,
    }))
}

/// Re-writes a response head (already validated) with `connection: close` appended, for when
/// the proxy must close the client connection although the upstream did not ask to.
pub fn response_head_with_close(raw: &[u8], out: &mut BytesMut) {
    // `raw` ends with an empty line (`\r\n\r\n` or `\n\n`); insert before it.
    let cut = if raw.ends_with(b"\r\n\r\n") {
        raw.len() - 2
    } else {
        raw.len() - 1
    };
    out.extend_from_slice(&raw[..cut]);
    out.extend_from_slice(b"connection: close\r\n\r\n");
}

/// A canned response generated by the proxy itself.
pub fn canned(
    out: &mut BytesMut,
    status: u16,
    reason: &str,
    body: &str,
    close: bool,
    http10_keep_alive: bool,
) {
    let mut s = String::with_capacity(128 + body.len());
    let _ = write!(
        s,
        "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n",
        body.len()
    );
    if close {
        s.push_str("connection: close\r\n");
    } else if http10_keep_alive {
        s.push_str("connection: keep-alive\r\n");
    }
    s.push_str("\r\n");
    s.push_str(body);
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<ParsedRequest, HeadError> {
        let mut scanned = 0;
        let end =
            find_head_end(raw.as_bytes(), &mut scanned)?.ok_or(HeadError::Bad("incomplete"))?;
        parse_request(&raw.as_bytes()[..end], 100)
    }

    #[test]
    fn accepts_plain_requests() {
        let p = parse("GET /v1?x=1 HTTP/1.1\r\nHost: deathstar\r\nX-A:  b \r\n\r\n").unwrap();
        assert_eq!(p.head.method, "GET");
        assert_eq!(p.head.target, "/v1?x=1");
        assert_eq!(p.head.host.as_deref(), Some("deathstar"));
        assert_eq!(p.head.headers[1], ("X-A".to_string(), b"b".to_vec()));
        assert!(p.keep_alive);
        assert_eq!(p.body, RequestBody::None);
        let p = parse("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(p.body, RequestBody::Chunked);
        let p = parse("POST /a HTTP/1.0\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        assert_eq!(p.body, RequestBody::Length(5));
        assert!(p.keep_alive);
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").is_ok());
        assert!(parse("GET /a%20b/%C3%A9?q=%2e%2e/%2F HTTP/1.1\r\nHost: h\r\n\r\n").is_ok());
        assert!(parse("GET /dir/ HTTP/1.1\r\nHost: h\r\n\r\n").is_ok());
        let p = parse("GET /chat HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
        assert!(p.upgrade);
    }

    #[test]
    fn rejects_ambiguous_requests() {
        let bad = [
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1,1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: b\r\n c\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A : b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: b\x01c\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: b\x7fc\r\n\r\n",
            "G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
            "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
            "GET * HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.2\r\nHost: h\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
            "GET / HTTP/1.1\nHost: h\n\n",
            "GET / HTTP/1.1\r\nHost: h\n\r\n",
            "GET /a/../b HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a/./b HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a/.. HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a/%2e%2e/b HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a%2Fb HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a%5cb HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a\\b HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /%65xhaust HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a%00 HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a%2 HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET //etc HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET /é HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
        ];
        let mut accepted = Vec::new();
        for raw in bad {
            if parse(raw).is_ok() {
                accepted.push(raw);
            }
        }
        assert!(accepted.is_empty(), "accepted: {accepted:#?}");
    }

    #[test]
    fn serialises_what_was_parsed() {
        let raw = "PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\nX-Y: z  w\r\nContent-Length: 3\r\n\r\n";
        let p = parse(raw).unwrap();
        let mut out = BytesMut::new();
        serialise_request(&p.head, &mut out);
        assert_eq!(&out[..], raw.as_bytes());
    }

    #[test]
    fn response_framing() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            1 << 16,
            100,
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.status, r.body, r.keep_alive, r.len),
            (200, ResponseBody::Length(5), true, 38)
        );
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            1 << 16,
            100,
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body, ResponseBody::Chunked);
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\n", 1 << 16, 100, false)
            .unwrap()
            .unwrap();
        assert_eq!((r.body, r.keep_alive), (ResponseBody::Close, false));
        let r = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n", 1 << 16, 100, false)
            .unwrap()
            .unwrap();
        assert_eq!((r.body, r.keep_alive), (ResponseBody::None, true));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            1 << 16,
            100,
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body, ResponseBody::None);
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            1 << 16,
            100,
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!r.keep_alive && r.says_close);
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                1 << 16,
                100,
                false
            )
            .is_err()
        );
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                1 << 16,
                100,
                false
            )
            .is_err()
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\n", 1 << 16, 100, false)
                .unwrap()
                .is_none()
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nA: b\r\n", 10, 100, false).is_err());
        let mut out = BytesMut::new();
        response_head_with_close(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", &mut out);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nconnection: close\r\n\r\n"
        );
    }
}
