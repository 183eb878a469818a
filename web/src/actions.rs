//! What a lesson step or an exercise probe does, written the way a teacher writes it
//! (`xwing land`, `xwing -- curl -s deathstar/v1`, `timeout`), parsed into the JSON the
//! [`Backend`](crate::Backend) takes, with the equivalent `lab` command line, and the
//! outcome vocabulary (`ok`, `http 403`, `timeout`, `blocked`, ...) graded against what happened.

use serde::Serialize;
use serde_json::{Value, json};

/// Time limit of a ship move when the step names none (the CLI's default too).
pub const DEFAULT_SHIP_TIMEOUT_MS: u64 = 5000;

/// A ship move in a pod: `POD MOVE [ARGS] [--timeout SECONDS] [--user U] [--password P]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShipAction {
    /// As written: a pod, `NAMESPACE/POD`, or a Deployment name (its first ready pod).
    pub pod: String,
    /// The move's JSON (`{"move": "land"}`...), as `demo_services::ship::Move` reads it.
    pub mv: Value,
    pub timeout_ms: u64,
    /// The words after the pod, for the command line.
    words: Vec<String>,
}

impl ShipAction {
    pub fn parse(text: &str) -> Result<Self, String> {
        let words = split_words(text)?;
        let (pod, rest) = words
            .split_first()
            .ok_or("a ship move needs a pod and a move, e.g. `xwing land`")?;
        let mut args = Vec::new();
        let mut timeout_ms = DEFAULT_SHIP_TIMEOUT_MS;
        let (mut user, mut password) = (None, None);
        let mut it = rest.iter();
        while let Some(w) = it.next() {
            let mut value = |flag: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("`{flag}` needs a value"))
            };
            match w.as_str() {
                "--timeout" => {
                    let v = value("--timeout")?;
                    let secs: f64 = v
                        .parse()
                        .ok()
                        .filter(|s: &f64| *s > 0.0 && *s <= 120.0)
                        .ok_or_else(|| format!("`--timeout {v}`: give seconds, 0 to 120"))?;
                    timeout_ms = (secs * 1000.0).round() as u64;
                }
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
        let (name, params) = args
            .split_first()
            .ok_or_else(|| format!("`{pod}` needs a move: land, survey, fire, fetch-logs STORE, http METHOD URL or connect HOST:PORT"))?;
        let mv = match (name.as_str(), params) {
            ("land" | "survey" | "fire", []) => json!({ "move": name }),
            ("fetch-logs", [store]) => {
                let store = if store.contains(':') {
                    store.clone()
                } else {
                    format!("{store}:21")
                };
                json!({"move": "fetch-logs", "store": store, "user": user, "password": password})
            }
            ("http", [method, url]) => json!({"move": "http", "method": method, "url": url}),
            ("connect", [addr]) => {
                if !addr.contains(':') {
                    return Err(format!("connect needs HOST:PORT, not `{addr}`"));
                }
                json!({"move": "connect", "addr": addr, "timeout_ms": timeout_ms})
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
            (other, _) => {
                return Err(format!(
                    "unknown move `{other}`: land, survey, fire, fetch-logs, http or connect"
                ));
            }
        };
        if (user.is_some() || password.is_some()) && name != "fetch-logs" {
            return Err("--user and --password go with fetch-logs".into());
        }
        Ok(Self {
            pod: pod.clone(),
            mv,
            timeout_ms,
            words: rest.to_vec(),
        })
    }

    /// The request body for `POST /api/pods/{ns}/{name}/ship`.
    pub fn body(&self) -> Value {
        json!({"move": self.mv, "options": {"timeout_ms": self.timeout_ms}})
    }

    pub fn move_name(&self) -> &str {
        self.mv["move"].as_str().unwrap_or_default()
    }

    /// The same move from a terminal. `connect` has no `lab ship` word, so it is shown as the
    /// hidden `ship-move` command that `lab ship` runs inside the pod.
    pub fn cli(&self) -> String {
        if self.move_name() == "connect" {
            let body = json!({"move": self.mv});
            format!(
                "lab exec {} -- lab ship-move --json '{}'",
                quote(&self.pod),
                body
            )
        } else {
            let mut s = format!("lab ship {}", quote(&self.pod));
            for w in &self.words {
                s.push(' ');
                s.push_str(&quote(w));
            }
            s
        }
    }

    /// A short description for tables: `xwing: land`.
    pub fn label(&self) -> String {
        let words: Vec<&str> = self
            .words
            .iter()
            .map(String::as_str)
            .take_while(|w| !w.starts_with("--"))
            .collect();
        format!("{}: {}", self.pod, words.join(" "))
    }
}

/// A program run in a pod: `POD -- PROGRAM ARGS...`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExecAction {
    pub pod: String,
    pub argv: Vec<String>,
}

impl ExecAction {
    pub fn parse(text: &str) -> Result<Self, String> {
        let words = split_words(text)?;
        match words.iter().position(|w| w == "--") {
            Some(1) if words.len() > 2 => Ok(Self {
                pod: words[0].clone(),
                argv: words[2..].to_vec(),
            }),
            _ => Err("exec is `POD -- PROGRAM ARGS`, e.g. `xwing -- curl -s deathstar/v1`".into()),
        }
    }

    pub fn cli(&self) -> String {
        let argv: Vec<String> = self.argv.iter().map(|a| quote(a)).collect();
        format!("lab exec {} -- {}", quote(&self.pod), argv.join(" "))
    }
}

/// Splits a command line into words: spaces separate, '...' and "..." quote, `\` escapes.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unclosed ' in `{text}`")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.push(chars.next().unwrap_or('\\')),
                        Some(c) => cur.push(c),
                        None => return Err(format!("unclosed \" in `{text}`")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next().unwrap_or('\\'));
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '-' | '_' | '.' | '/' | ':' | '=' | '@' | ',' | '%' | '+')
        });
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What a step or probe should produce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expect {
    /// Success of any kind: 2xx, FTP fetched, connected, exit 0, policy applied or deleted.
    Ok,
    /// This HTTP status.
    Http {
        status: u16,
    },
    /// No answer within the time limit (a silent drop).
    Timeout,
    /// Connection refused or reset.
    Refused,
    /// Any of timeout, refused or HTTP 403: the traffic did not get through.
    Blocked,
    FtpOk,
    FtpDenied,
    /// A policy that the lab refuses (validation errors).
    Rejected,
    /// Whatever happens; the step just shows it.
    Any,
}

impl Expect {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim().to_ascii_lowercase();
        let words: Vec<&str> = t.split_whitespace().collect();
        Ok(match words.as_slice() {
            ["ok"] | ["success"] | ["applied"] | ["deleted"] | ["connected"] => Expect::Ok,
            ["timeout"] | ["timed", "out"] | ["timeout", "(dropped)"] => Expect::Timeout,
            ["refused"] => Expect::Refused,
            ["blocked"] => Expect::Blocked,
            ["ftp", "ok"] => Expect::FtpOk,
            ["ftp", "denied"] => Expect::FtpDenied,
            ["rejected"] => Expect::Rejected,
            ["any"] => Expect::Any,
            ["http", code] | [code] if code.len() == 3 => match code.parse::<u16>() {
                Ok(status @ 100..=599) => Expect::Http { status },
                _ => return Err(format!("`{text}` is not an HTTP status")),
            },
            _ => {
                return Err(format!(
                    "unknown outcome `{text}`: ok, http STATUS (or just 403), timeout, refused, blocked, ftp ok, ftp denied, rejected, any"
                ));
            }
        })
    }

    /// For people: "times out", "answers HTTP 403".
    pub fn describe(&self) -> String {
        match self {
            Expect::Ok => "succeeds".into(),
            Expect::Http { status } => format!("answers HTTP {status}"),
            Expect::Timeout => "times out (dropped)".into(),
            Expect::Refused => "is refused".into(),
            Expect::Blocked => "is blocked (timeout, refused or 403)".into(),
            Expect::FtpOk => "fetches the logs over FTP".into(),
            Expect::FtpDenied => "is denied by the FTP store".into(),
            Expect::Rejected => "is rejected by validation".into(),
            Expect::Any => "(anything: just look)".into(),
        }
    }

    /// Whether an outcome, as classified by [`classify`], is what was expected.
    pub fn matches(&self, got: &Got) -> bool {
        match self {
            Expect::Any => true,
            Expect::Ok => matches!(got, Got::Ok | Got::Http(200..=299) | Got::FtpOk),
            Expect::Http { status } => *got == Got::Http(*status),
            Expect::Timeout => *got == Got::Timeout,
            Expect::Refused => *got == Got::Refused,
            Expect::Blocked => matches!(got, Got::Timeout | Got::Refused | Got::Http(403)),
            Expect::FtpOk => *got == Got::FtpOk,
            Expect::FtpDenied => *got == Got::FtpDenied,
            Expect::Rejected => *got == Got::Rejected,
        }
    }
}

/// What happened, in the same vocabulary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "status", rename_all = "snake_case")]
pub enum Got {
    Ok,
    Http(u16),
    Timeout,
    Refused,
    FtpOk,
    FtpDenied,
    Rejected,
    Error,
}

impl Got {
    pub fn describe(&self) -> String {
        match self {
            Got::Ok => "succeeded".into(),
            Got::Http(s) => format!("HTTP {s}"),
            Got::Timeout => "timed out".into(),
            Got::Refused => "refused".into(),
            Got::FtpOk => "FTP fetch ok".into(),
            Got::FtpDenied => "FTP denied".into(),
            Got::Rejected => "rejected".into(),
            Got::Error => "error".into(),
        }
    }
}

/// Classifies a ship outcome (`{"kind": "ok", "status": 200, ...}`).
pub fn classify_ship(outcome: &Value) -> Got {
    let status = outcome["status"].as_u64().unwrap_or(0) as u16;
    match outcome["kind"].as_str().unwrap_or_default() {
        "ok" | "http_error" => Got::Http(status),
        "connected" => Got::Ok,
        "timed_out" => Got::Timeout,
        "refused" => Got::Refused,
        "ftp_ok" => Got::FtpOk,
        "ftp_denied" => Got::FtpDenied,
        _ => Got::Error,
    }
}

/// Classifies a program's exit: curl's 28 is a timeout and 7 a refused connection.
pub fn classify_exec(exit_code: Option<i32>, timed_out: bool) -> Got {
    match (exit_code, timed_out) {
        (_, true) | (Some(28), _) => Got::Timeout,
        (Some(0), _) => Got::Ok,
        (Some(7), _) => Got::Refused,
        _ => Got::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ship_moves_parse_like_the_cli() {
        let a = ShipAction::parse("xwing land").unwrap();
        assert_eq!(a.pod, "xwing");
        assert_eq!(a.mv, json!({"move": "land"}));
        assert_eq!(a.cli(), "lab ship xwing land");
        assert_eq!(a.timeout_ms, DEFAULT_SHIP_TIMEOUT_MS);

        let f = ShipAction::parse(
            "tiefighter fetch-logs ftp-secure --user deathstar --password darkside --timeout 2",
        )
        .unwrap();
        assert_eq!(f.mv["store"], "ftp-secure:21");
        assert_eq!(f.mv["user"], "deathstar");
        assert_eq!(f.timeout_ms, 2000);
        assert_eq!(
            f.cli(),
            "lab ship tiefighter fetch-logs ftp-secure --user deathstar --password darkside --timeout 2"
        );
        assert_eq!(f.label(), "tiefighter: fetch-logs ftp-secure");

        let h = ShipAction::parse("tiefighter http GET /v1/healthz").unwrap();
        assert_eq!(
            h.mv,
            json!({"move": "http", "method": "GET", "url": "/v1/healthz"})
        );

        let c = ShipAction::parse("deathstar connect ftp-vulnerable:21 --timeout 1.5").unwrap();
        assert_eq!(c.mv["timeout_ms"], 1500);
        assert!(
            c.cli()
                .starts_with("lab exec deathstar -- lab ship-move --json '{")
        );
        assert_eq!(c.body()["options"]["timeout_ms"], 1500);

        for bad in [
            "",
            "xwing",
            "xwing jump",
            "xwing land now",
            "xwing fetch-logs",
            "xwing connect ftp",
            "xwing land --user x",
            "xwing land --timeout",
            "xwing land --timeout -1",
            "xwing land --fast",
        ] {
            assert!(ShipAction::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exec_keeps_quoted_words() {
        let e = ExecAction::parse(
            "xwing -- curl -s -m 3 -XPOST deathstar.default.svc.cluster.local/v1/request-landing",
        )
        .unwrap();
        assert_eq!(e.pod, "xwing");
        assert_eq!(e.argv[0], "curl");
        assert_eq!(
            e.cli(),
            "lab exec xwing -- curl -s -m 3 -XPOST deathstar.default.svc.cluster.local/v1/request-landing"
        );
        let q = ExecAction::parse(r#"xwing -- sh -c 'echo "a b"'"#).unwrap();
        assert_eq!(q.argv, ["sh", "-c", r#"echo "a b""#]);
        assert_eq!(q.cli(), r#"lab exec xwing -- sh -c 'echo "a b"'"#);
        assert!(ExecAction::parse("xwing curl x").is_err());
        assert!(ExecAction::parse("xwing --").is_err());
        assert!(split_words("a 'b").is_err());
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn outcomes_and_expectations() {
        assert_eq!(Expect::parse("403").unwrap(), Expect::Http { status: 403 });
        assert_eq!(
            Expect::parse("HTTP 503").unwrap(),
            Expect::Http { status: 503 }
        );
        assert_eq!(Expect::parse("timed out").unwrap(), Expect::Timeout);
        assert_eq!(Expect::parse("ftp denied").unwrap(), Expect::FtpDenied);
        assert!(Expect::parse("maybe").is_err());
        assert!(Expect::parse("999").is_err());

        let landed = json!({"kind": "ok", "status": 200, "body": "Ship landed\n"});
        let denied = json!({"kind": "http_error", "status": 403, "body": "Access denied\r\n"});
        let dropped = json!({"kind": "timed_out", "elapsed_ms": 5000});
        assert!(Expect::Ok.matches(&classify_ship(&landed)));
        assert!(!Expect::Ok.matches(&classify_ship(&denied)));
        assert!(Expect::Blocked.matches(&classify_ship(&denied)));
        assert!(Expect::Blocked.matches(&classify_ship(&dropped)));
        assert!(!Expect::Blocked.matches(&classify_ship(&landed)));
        assert!(Expect::Http { status: 403 }.matches(&classify_ship(&denied)));
        assert!(Expect::Ok.matches(&classify_ship(&json!({"kind": "connected"}))));
        assert!(Expect::Ok.matches(&classify_ship(&json!({"kind": "ftp_ok"}))));
        assert!(!Expect::FtpOk.matches(&classify_ship(&json!({"kind": "ftp_denied"}))));
        assert_eq!(classify_exec(Some(28), false), Got::Timeout);
        assert_eq!(classify_exec(None, true), Got::Timeout);
        assert_eq!(classify_exec(Some(7), false), Got::Refused);
        assert_eq!(classify_exec(Some(0), false), Got::Ok);
    }
}
