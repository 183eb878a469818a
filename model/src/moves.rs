//! The ships' moves in the story (land, survey, fire, fetch the Deathstar's logs, any HTTP
//! request, a bare TCP connect, a connection flood), their outcomes, and the one parser from
//! words that `lab ship`, lesson steps and exercise probes share: `land`,
//! `fetch-logs ftp-vulnerable --user u --password p`, `connect ftp-secure:21 --timeout 2`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Time limit of a ship move when none is given (`lab ship --timeout`'s default).
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
/// `flood` without arguments.
pub const DEFAULT_FLOOD_CONNECTIONS: u32 = 100;
pub const DEFAULT_FLOOD_SECONDS: f64 = 20.0;
pub const MAX_FLOOD_CONNECTIONS: u32 = 1000;
pub const MAX_FLOOD_SECONDS: f64 = 50.0;
/// The longest time limit a move may be given, in seconds.
pub const MAX_TIMEOUT_SECONDS: f64 = 120.0;

/// Where and how long: the Deathstar's base URL and the time limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Land, Survey, Fire and relative `Http` URLs go here.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Bounds a whole HTTP move; for `FetchLogs`, each FTP step (connect, login, list, each file).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_base_url() -> String {
    "http://deathstar.default.svc.cluster.local".to_string()
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl Default for Options {
    fn default() -> Self {
        Options {
            base_url: default_base_url(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "move", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Move {
    /// `POST /v1/request-landing`
    Land,
    /// `GET /v1`
    Survey,
    /// `PUT /v1/exhaust-port`
    Fire,
    /// Log in to an FTP store and download every `deathstar-*.log` file.
    FetchLogs {
        /// "host:port"
        store: String,
        /// `None` logs in anonymously.
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        password: Option<String>,
        /// Directory to look in; empty means the login directory.
        #[serde(default)]
        dir: String,
    },
    /// Any request. `url` is absolute (`http://host[:port]/path`) or a path joined to the base URL.
    Http {
        method: String,
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: Option<String>,
    },
    /// Open a TCP connection to "host:port" and close it again, sending nothing: the question
    /// "can this pod reach that port at all?", for any port (FTP, DNS over TCP, ...).
    Connect {
        addr: String,
        /// Overrides [`Options::timeout_ms`] for this move.
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// A connection flood: open `connections` TCP connections to the Deathstar (the base URL's
    /// host and port) without sending anything, and hold them for `hold_ms`.
    Flood { connections: u32, hold_ms: u64 },
}

impl Move {
    /// The move's word: `land`, `fetch-logs`, `connect`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Move::Land => "land",
            Move::Survey => "survey",
            Move::Fire => "fire",
            Move::FetchLogs { .. } => "fetch-logs",
            Move::Http { .. } => "http",
            Move::Connect { .. } => "connect",
            Move::Flood { .. } => "flood",
        }
    }

    /// A move from its word and arguments, as written after the pod: `land`,
    /// `fetch-logs ftp-vulnerable` (with `user`/`password` from `--user`/`--password`),
    /// `http GET /v1`, `connect HOST:PORT` (with the move's time limit), `flood [N] [SECONDS]`.
    pub fn from_words(
        name: &str,
        params: &[String],
        login: (Option<String>, Option<String>),
        timeout_ms: u64,
    ) -> Result<Self, String> {
        let mv = match (name, params) {
            ("land", []) => Move::Land,
            ("survey", []) => Move::Survey,
            ("fire", []) => Move::Fire,
            ("fetch-logs", [store]) => {
                let store = if store.contains(':') {
                    store.clone()
                } else {
                    format!("{store}:21")
                };
                Move::FetchLogs {
                    store,
                    user: login.0.clone(),
                    password: login.1.clone(),
                    dir: String::new(),
                }
            }
            ("http", [method, url]) => Move::Http {
                method: method.clone(),
                url: url.clone(),
                headers: BTreeMap::new(),
                body: None,
            },
            ("connect", [addr]) => {
                if !addr.contains(':') {
                    return Err(format!("connect needs HOST:PORT, not `{addr}`"));
                }
                Move::Connect {
                    addr: addr.clone(),
                    timeout_ms: Some(timeout_ms),
                }
            }
            ("flood", params) if params.len() <= 2 => {
                let connections: u32 = match params.first() {
                    None => DEFAULT_FLOOD_CONNECTIONS,
                    Some(n) => n
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_FLOOD_CONNECTIONS).contains(n))
                        .ok_or_else(|| {
                            format!("flood `{n}`: give the number of connections, 1 to {MAX_FLOOD_CONNECTIONS}")
                        })?,
                };
                let secs: f64 = match params.get(1) {
                    None => DEFAULT_FLOOD_SECONDS,
                    Some(s) => s
                        .parse()
                        .ok()
                        .filter(|s: &f64| (0.0..=MAX_FLOOD_SECONDS).contains(s))
                        .ok_or_else(|| {
                            format!("flood holds its connections 0 to {MAX_FLOOD_SECONDS} seconds, not `{s}`")
                        })?,
                };
                Move::Flood {
                    connections,
                    hold_ms: (secs * 1000.0).round() as u64,
                }
            }
            ("land" | "survey" | "fire", _) => {
                return Err(format!("`{name}` takes no arguments"));
            }
            ("fetch-logs", _) => {
                return Err("fetch-logs takes one store, e.g. `fetch-logs ftp-vulnerable`".into());
            }
            ("http", _) => return Err("http takes METHOD URL, e.g. `http GET /v1`".into()),
            ("connect", _) => {
                return Err("connect takes HOST:PORT, e.g. `connect ftp-secure:21`".into());
            }
            ("flood", _) => {
                return Err("flood takes [CONNECTIONS] [SECONDS], e.g. `flood 200 15`".into());
            }
            (other, _) => {
                return Err(format!(
                    "unknown move `{other}`: land, survey, fire, fetch-logs, http, connect or flood"
                ));
            }
        };
        if (login.0.is_some() || login.1.is_some()) && !matches!(mv, Move::FetchLogs { .. }) {
            return Err("--user and --password go with fetch-logs".into());
        }
        Ok(mv)
    }
}

/// A move with its options, as written after the pod: `MOVE [ARGS] [--timeout SECONDS]
/// [--user U] [--password P]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipCommand {
    pub mv: Move,
    pub timeout_ms: u64,
}

impl ShipCommand {
    pub fn parse(words: &[String]) -> Result<Self, String> {
        let mut args = Vec::new();
        let mut timeout_ms = DEFAULT_TIMEOUT_MS;
        let (mut user, mut password) = (None, None);
        let mut it = words.iter();
        while let Some(w) = it.next() {
            let mut value = |flag: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("`{flag}` needs a value"))
            };
            match w.as_str() {
                "--timeout" => timeout_ms = parse_timeout(&value("--timeout")?)?,
                "--user" => user = Some(value("--user")?),
                "--password" => password = Some(value("--password")?),
                flag if flag.starts_with("--") => {
                    return Err(format!(
                        "unknown option `{flag}`: a ship move takes --timeout, --user, --password"
                    ));
                }
                _ => args.push(w.clone()),
            }
        }
        let (name, params) = args.split_first().ok_or(
            "a move is missing: land, survey, fire, fetch-logs STORE, http METHOD URL, connect HOST:PORT or flood N SECONDS",
        )?;
        let mv = Move::from_words(name, params, (user, password), timeout_ms)?;
        Ok(Self { mv, timeout_ms })
    }

    /// The request body for `POST /api/pods/{ns}/{name}/ship`.
    pub fn request(&self) -> ShipRequest {
        ShipRequest {
            mv: self.mv.clone(),
            options: ShipOptions {
                timeout_ms: Some(self.timeout_ms),
                base_url: None,
            },
        }
    }
}

/// `--timeout SECONDS` (more than 0, at most [`MAX_TIMEOUT_SECONDS`]) as milliseconds.
pub fn parse_timeout(v: &str) -> Result<u64, String> {
    v.parse()
        .ok()
        .and_then(|secs| timeout_ms(secs).ok())
        .ok_or_else(|| format!("`--timeout {v}`: give seconds, 0 to {MAX_TIMEOUT_SECONDS}"))
}

/// A time limit in seconds (more than 0, at most [`MAX_TIMEOUT_SECONDS`]) as milliseconds.
pub fn timeout_ms(secs: f64) -> Result<u64, String> {
    if secs > 0.0 && secs <= MAX_TIMEOUT_SECONDS {
        Ok((secs * 1000.0).round() as u64)
    } else {
        Err(format!(
            "the time limit is {secs} s: give seconds, 0 to {MAX_TIMEOUT_SECONDS}"
        ))
    }
}

/// `POST /api/pods/{ns}/{name}/ship`, and the argument of `lab ship-move --json` in the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipRequest {
    #[serde(rename = "move")]
    pub mv: Move,
    #[serde(default)]
    pub options: ShipOptions,
}

/// What a request may change of the [`Options`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipOptions {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub base_url: Option<String>,
}

impl ShipOptions {
    pub fn apply(&self, mut opts: Options) -> Options {
        if let Some(t) = self.timeout_ms {
            opts.timeout_ms = t;
        }
        if let Some(b) = &self.base_url {
            opts.base_url = b.clone();
        }
        opts
    }
}

/// What happened. `elapsed_ms` is the time from the start of the move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// A 2xx answer.
    Ok {
        status: u16,
        body: String,
        elapsed_ms: u64,
    },
    /// Any other HTTP answer, e.g. 403 `Access denied` from a policy proxy or 503 from the port.
    HttpError {
        status: u16,
        body: String,
        elapsed_ms: u64,
    },
    /// Connection refused or reset.
    Refused { detail: String, elapsed_ms: u64 },
    /// No answer within the time limit: what a silent drop looks like.
    TimedOut { elapsed_ms: u64 },
    /// Anything else: unresolvable name, bad URL, protocol error.
    Error { detail: String, elapsed_ms: u64 },
    /// The logs were fetched: the file names and their concatenated content.
    FtpOk {
        files: Vec<String>,
        content: String,
        elapsed_ms: u64,
    },
    /// The store refused: login failed or permission denied.
    FtpDenied { detail: String, elapsed_ms: u64 },
    /// A [`Move::Connect`] got its TCP handshake done: `peer` is the address it reached.
    Connected { peer: String, elapsed_ms: u64 },
    /// A [`Move::Flood`] is over: how many connections opened, were refused or failed.
    Flooded {
        connected: u32,
        refused: u32,
        failed: u32,
        elapsed_ms: u64,
    },
}

/// The longest body shown by [`Outcome::summary`].
const SUMMARY_BODY_CHARS: usize = 160;

impl Outcome {
    /// One line for the CLI, e.g. `200 Ship landed`, `timed out after 5.0s`.
    pub fn summary(&self) -> String {
        match self {
            Outcome::Ok { status, body, .. } | Outcome::HttpError { status, body, .. } => {
                let body = one_line(body);
                if body.is_empty() {
                    status.to_string()
                } else {
                    format!("{status} {body}")
                }
            }
            Outcome::Refused { detail, .. } => format!("refused: {detail}"),
            Outcome::TimedOut { elapsed_ms } => {
                format!("timed out after {:.1}s", *elapsed_ms as f64 / 1000.0)
            }
            Outcome::Error { detail, .. } => format!("error: {detail}"),
            Outcome::FtpOk { files, content, .. } => format!(
                "fetched {} log file{} ({} lines)",
                files.len(),
                if files.len() == 1 { "" } else { "s" },
                content.lines().count()
            ),
            Outcome::FtpDenied { detail, .. } => format!("denied: {detail}"),
            Outcome::Connected { peer, .. } => format!("connected to {peer}"),
            Outcome::Flooded {
                connected,
                refused,
                failed,
                ..
            } => {
                format!("flood: {connected} connections held, {refused} refused, {failed} failed")
            }
        }
    }

    /// Process exit status for `lab ship`: 0 success, 1 the server said no (HTTP error status
    /// or FTP refusal), 2 refused, 3 timed out, 4 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Ok { .. }
            | Outcome::FtpOk { .. }
            | Outcome::Connected { .. }
            | Outcome::Flooded { .. } => 0,
            Outcome::HttpError { .. } | Outcome::FtpDenied { .. } => 1,
            Outcome::Refused { .. } => 2,
            Outcome::TimedOut { .. } => 3,
            Outcome::Error { .. } => 4,
        }
    }

    pub fn elapsed_ms(&self) -> u64 {
        match self {
            Outcome::Ok { elapsed_ms, .. }
            | Outcome::HttpError { elapsed_ms, .. }
            | Outcome::Refused { elapsed_ms, .. }
            | Outcome::TimedOut { elapsed_ms }
            | Outcome::Error { elapsed_ms, .. }
            | Outcome::FtpOk { elapsed_ms, .. }
            | Outcome::FtpDenied { elapsed_ms, .. }
            | Outcome::Connected { elapsed_ms, .. }
            | Outcome::Flooded { elapsed_ms, .. } => *elapsed_ms,
        }
    }

    /// The texts a lesson may look for in it: the body, the fetched content, the detail.
    pub fn texts(&self) -> Vec<&str> {
        match self {
            Outcome::Ok { body, .. } | Outcome::HttpError { body, .. } => vec![body],
            Outcome::FtpOk { content, .. } => vec![content],
            _ => vec![],
        }
    }
}

/// Collapses whitespace (JSON, CRLF) to single spaces and shortens long bodies.
fn one_line(body: &str) -> String {
    let mut out = String::new();
    for (i, word) in body.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.chars().count() > SUMMARY_BODY_CHARS {
        out = out.chars().take(SUMMARY_BODY_CHARS).collect();
        out.push('…');
    }
    out
}

/// A move's outcome as `lab ship` and the page get it: the outcome with its one-line summary
/// and exit status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipResult {
    #[serde(flatten)]
    pub outcome: Outcome,
    pub summary: String,
    pub exit_code: i32,
}

impl From<Outcome> for ShipResult {
    fn from(outcome: Outcome) -> Self {
        Self {
            summary: outcome.summary(),
            exit_code: outcome.exit_code(),
            outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn summaries() {
        let ok = Outcome::Ok {
            status: 200,
            body: "Ship landed\n".into(),
            elapsed_ms: 3,
        };
        assert_eq!(ok.summary(), "200 Ship landed");
        let denied = Outcome::HttpError {
            status: 403,
            body: "Access denied\r\n".into(),
            elapsed_ms: 3,
        };
        assert_eq!(denied.summary(), "403 Access denied");
        assert_eq!(denied.exit_code(), 1);
        let slow = Outcome::TimedOut { elapsed_ms: 5004 };
        assert_eq!(slow.summary(), "timed out after 5.0s");
        assert_eq!(slow.exit_code(), 3);
        let long = Outcome::Ok {
            status: 200,
            body: "x ".repeat(500),
            elapsed_ms: 1,
        };
        assert!(long.summary().chars().count() <= 4 + SUMMARY_BODY_CHARS + 1);
    }

    #[test]
    fn moves_as_json_and_by_name() {
        let mv: Move =
            serde_json::from_str(r#"{"move": "fetch-logs", "store": "ftp:21"}"#).unwrap();
        assert_eq!(
            mv,
            Move::FetchLogs {
                store: "ftp:21".into(),
                user: None,
                password: None,
                dir: String::new()
            }
        );
        assert_eq!(
            serde_json::to_string(&Move::Land).unwrap(),
            r#"{"move":"land"}"#
        );
        let by_name = |w: &str| Move::from_words(w, &[], (None, None), DEFAULT_TIMEOUT_MS);
        assert_eq!(by_name("fire").unwrap(), Move::Fire);
        assert!(by_name("jump").is_err());
        let out = serde_json::to_value(Outcome::TimedOut { elapsed_ms: 1 }).unwrap();
        assert_eq!(out["kind"], "timed_out");
    }

    #[test]
    fn one_line_collapses_whitespace() {
        assert_eq!(one_line("{\n  \"a\": 1\n}\n"), "{ \"a\": 1 }");
    }

    #[test]
    fn parses_every_move() {
        let p = |s: &str| ShipCommand::parse(&words(s));
        assert_eq!(p("land").unwrap().mv, Move::Land);
        assert_eq!(
            p("fetch-logs ftp-vulnerable --user u --password p")
                .unwrap()
                .mv,
            Move::FetchLogs {
                store: "ftp-vulnerable:21".into(),
                user: Some("u".into()),
                password: Some("p".into()),
                dir: String::new(),
            }
        );
        assert_eq!(
            p("connect ftp-secure:21 --timeout 2").unwrap(),
            ShipCommand {
                mv: Move::Connect {
                    addr: "ftp-secure:21".into(),
                    timeout_ms: Some(2000)
                },
                timeout_ms: 2000
            }
        );
        assert_eq!(
            p("flood 200 15").unwrap().mv,
            Move::Flood {
                connections: 200,
                hold_ms: 15_000
            }
        );
        assert_eq!(
            p("flood").unwrap().mv,
            Move::Flood {
                connections: 100,
                hold_ms: 20_000
            }
        );
        assert!(p("land now").unwrap_err().contains("takes no arguments"));
        assert!(p("jump").unwrap_err().contains("unknown move `jump`"));
        assert!(
            p("land --user u")
                .unwrap_err()
                .contains("go with fetch-logs")
        );
        assert!(p("flood 5000").unwrap_err().contains("1 to 1000"));
        assert!(p("land --timeout 0").unwrap_err().contains("0 to 120"));
        assert!(p("connect ftp").unwrap_err().contains("HOST:PORT"));
    }

    #[test]
    fn requests_and_results_as_json() {
        let req = ShipCommand::parse(&words("land")).unwrap().request();
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"move":{"move":"land"},"options":{"timeout_ms":5000}}"#
        );
        assert_eq!(serde_json::from_str::<ShipRequest>(&text).unwrap(), req);
        let res = ShipResult::from(Outcome::TimedOut { elapsed_ms: 5004 });
        let text = serde_json::to_string(&res).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"timed_out","elapsed_ms":5004,"summary":"timed out after 5.0s","exit_code":3}"#
        );
        assert_eq!(serde_json::from_str::<ShipResult>(&text).unwrap(), res);
    }
}
