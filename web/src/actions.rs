//! What a lesson step or an exercise probe does, written the way a teacher writes it
//! (`xwing land`, `xwing -- curl -s deathstar/v1`, `timeout`), parsed into the JSON the
//! [`Backend`](crate::Backend) takes, with the equivalent `lab` command line, and the
//! outcome vocabulary (`ok`, `http 403`, `timeout`, `blocked`, ...) graded against what happened.

use model::{Move, Outcome, PrefilterChange, ShipCommand, ShipRequest, moves};
use serde::Serialize;

/// Time limit of a ship move when the step names none (the CLI's default too).
pub const DEFAULT_SHIP_TIMEOUT_MS: u64 = moves::DEFAULT_TIMEOUT_MS;

/// A ship move in a pod: `POD MOVE [ARGS] [--timeout SECONDS] [--user U] [--password P]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShipAction {
    /// As written: a pod, `NAMESPACE/POD`, or a Deployment name (its first ready pod).
    pub pod: String,
    pub mv: Move,
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
        if rest.iter().all(|w| w.starts_with("--")) {
            return Err(format!(
                "`{pod}` needs a move: land, survey, fire, fetch-logs STORE, http METHOD URL, connect HOST:PORT or flood N SECONDS"
            ));
        }
        let cmd = ShipCommand::parse(rest)?;
        Ok(Self {
            pod: pod.clone(),
            mv: cmd.mv,
            timeout_ms: cmd.timeout_ms,
            words: rest.to_vec(),
        })
    }

    /// The request for `POST /api/pods/{ns}/{name}/ship`.
    pub fn request(&self) -> ShipRequest {
        ShipCommand {
            mv: self.mv.clone(),
            timeout_ms: self.timeout_ms,
        }
        .request()
    }

    pub fn move_name(&self) -> &str {
        self.mv.name()
    }

    /// The same move from a terminal. `connect` has no `lab ship` word, so it is shown as the
    /// hidden `ship-move` command that `lab ship` runs inside the pod.
    pub fn cli(&self) -> String {
        if let Move::Connect { .. } = self.mv {
            let req = ShipRequest {
                mv: self.mv.clone(),
                options: Default::default(),
            };
            format!(
                "lab exec {} -- lab ship-move --json '{}'",
                quote(&self.pod),
                serde_json::to_string(&req).unwrap_or_default()
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

/// Splits a command line into words as a POSIX shell does (quotes and backslashes).
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    shell_words::split(text).map_err(|_| format!("a quote is not closed in `{text}`"))
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn quote(word: &str) -> String {
    shell_words::quote(word).into_owned()
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
    /// A background step that has started and not ended yet.
    Running,
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
            Got::Running => "running in the background".into(),
        }
    }
}

/// Classifies a ship's outcome.
pub fn classify_ship(outcome: &Outcome) -> Got {
    match outcome {
        Outcome::Ok { status, .. } | Outcome::HttpError { status, .. } => Got::Http(*status),
        Outcome::Connected { .. } => Got::Ok,
        Outcome::TimedOut { .. } => Got::Timeout,
        Outcome::Refused { .. } => Got::Refused,
        Outcome::FtpOk { .. } => Got::FtpOk,
        Outcome::FtpDenied { .. } => Got::FtpDenied,
        // A flood: ok when the server took every connection, refused when it refused some (a
        // connection limit), timeout when some got no answer.
        Outcome::Flooded { refused, .. } if *refused > 0 => Got::Refused,
        Outcome::Flooded { failed, .. } if *failed > 0 => Got::Timeout,
        Outcome::Flooded { .. } => Got::Ok,
        Outcome::Error { .. } => Got::Error,
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

/// A change to (or a look at) the XDP prefilter, written like `lab prefilter`'s arguments:
/// `update --cidr C...`, `delete --cidr C...`, `list`, `bypass --node-port P --unsafe`,
/// `bypass --node-port P --off`, or `reset` (the lab's addition for lessons: empty the deny list
/// and turn every bypass off, whatever they hold).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PrefilterAction {
    List,
    Reset,
    Change(PrefilterChange),
}

impl PrefilterAction {
    pub fn parse(text: &str) -> Result<Self, String> {
        let words = split_words(text)?;
        let (verb, rest) = words.split_first().ok_or(
            "say what to do: update --cidr C, delete --cidr C, list, bypass --node-port P --unsafe|--off, or reset",
        )?;
        let mut cidrs = Vec::new();
        let mut node_port = None;
        let (mut unsafe_ok, mut off) = (false, false);
        let mut it = rest.iter();
        while let Some(w) = it.next() {
            match w.as_str() {
                "--cidr" => cidrs.push(it.next().ok_or("`--cidr` needs a CIDR")?.clone()),
                "--node-port" => {
                    let v = it.next().ok_or("`--node-port` needs a port")?;
                    node_port = Some(
                        v.parse::<u16>()
                            .ok()
                            .filter(|p| *p > 0)
                            .ok_or_else(|| format!("`--node-port {v}`: give a port number"))?,
                    );
                }
                "--unsafe" => unsafe_ok = true,
                "--off" => off = true,
                other => {
                    return Err(format!(
                        "unexpected `{other}`: the prefilter takes --cidr, --node-port, --unsafe, --off"
                    ));
                }
            }
        }
        let only = |allowed: bool, what: &str| {
            if allowed {
                Ok(())
            } else {
                Err(format!("`{verb}` takes no {what}"))
            }
        };
        match verb.as_str() {
            "update" | "delete" => {
                only(
                    node_port.is_none() && !unsafe_ok && !off,
                    "--node-port, --unsafe or --off",
                )?;
                if cidrs.is_empty() {
                    return Err(format!(
                        "`{verb}` needs --cidr, e.g. `{verb} --cidr 198.51.100.0/24`"
                    ));
                }
                Ok(Self::Change(if verb == "update" {
                    PrefilterChange::Update { cidrs }
                } else {
                    PrefilterChange::Delete { cidrs }
                }))
            }
            "bypass" => {
                only(cidrs.is_empty(), "--cidr")?;
                let port = node_port.ok_or(
                    "`bypass` needs --node-port, e.g. `bypass --node-port 30007 --unsafe`",
                )?;
                if off && unsafe_ok {
                    return Err(
                        "give --unsafe to turn the bypass on, or --off to turn it off, not both"
                            .into(),
                    );
                }
                Ok(Self::Change(PrefilterChange::Bypass {
                    node_port: port,
                    enabled: !off,
                    unsafe_ok,
                }))
            }
            "list" | "reset" => {
                only(rest.is_empty(), "arguments")?;
                Ok(if verb == "list" {
                    Self::List
                } else {
                    Self::Reset
                })
            }
            other => Err(format!(
                "unknown prefilter command `{other}`: update, delete, list, bypass or reset"
            )),
        }
    }

    /// The same from a terminal. `reset` has no command of its own: it is the deletes and
    /// bypass-offs that the current state needs, shown once it ran.
    pub fn cli(&self) -> String {
        match self {
            Self::List => "lab prefilter list".into(),
            Self::Reset => "lab prefilter list   # then `lab prefilter delete --cidr C` for each CIDR listed and `lab prefilter bypass --node-port P --off` for each bypassed NodePort".into(),
            Self::Change(change) => change.cli(quote),
        }
    }
}

/// Which metric lines a step shows: `NAME` or `NAME{label="value",...}` (the lines of that
/// metric having at least those labels).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricQuery {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl MetricQuery {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (name, labels) = match t.split_once('{') {
            None => (t, ""),
            Some((n, rest)) => (
                n,
                rest.strip_suffix('}')
                    .ok_or_else(|| format!("`{t}`: close the labels with }}"))?,
            ),
        };
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(format!(
                "`{t}`: give a metric name, optionally with labels: lab_nodeport_connections_total{{source=\"internet\"}}"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            labels: parse_labels(labels).map_err(|e| format!("`{t}`: {e}"))?,
        })
    }

    /// Whether a line of the Prometheus text format is a sample of this query; its value if so.
    pub fn sample(&self, line: &str) -> Option<f64> {
        let line = line.trim();
        if line.starts_with('#') {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?).ok()?),
        };
        let hit = name == self.name && self.labels.iter().all(|want| labels.contains(want));
        if !hit {
            return None;
        }
        match value {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            v => v.parse().ok(),
        }
    }

    /// The same from a terminal.
    pub fn cli(&self) -> String {
        let mut s = format!(
            "lab metrics | grep {}",
            quote(&format!("^{}[{{ ]", self.name))
        );
        for (k, v) in &self.labels {
            s.push_str(&format!(" | grep -F {}", quote(&format!("{k}=\"{v}\""))));
        }
        s
    }
}

/// `a="x",b="y"` (values may escape `\"`, `\\` and `\n`).
fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or("labels are written name=\"value\"")?;
        let key = key.trim().trim_start_matches(',').trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{key}` is not a label name"));
        }
        let mut chars = after
            .trim_start()
            .strip_prefix('"')
            .ok_or("quote label values: name=\"value\"")?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unclosed label value".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unclosed label value".into()),
            }
        };
        let after_value = &after.trim_start()[1 + end + 1..];
        out.push((key.to_owned(), value));
        rest = after_value
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    Ok(out)
}

/// A comparison a metrics step expects of the sum of the lines it shows: `> 0`, `>= 3`,
/// `< 1`, `<= 2`, `== 0` (or just `0`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValueExpect {
    pub op: String,
    pub value: f64,
}

impl ValueExpect {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (op, num) = ["==", ">=", "<=", "!=", ">", "<", "="]
            .iter()
            .find_map(|op| t.strip_prefix(op).map(|rest| (*op, rest)))
            .unwrap_or(("==", t));
        let op = if op == "=" { "==" } else { op };
        let value: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("`{t}`: compare with a number, e.g. `> 0`, `>= 3`, `== 0`"))?;
        Ok(Self {
            op: op.to_owned(),
            value,
        })
    }

    pub fn holds(&self, got: f64) -> bool {
        match self.op.as_str() {
            ">" => got > self.value,
            ">=" => got >= self.value,
            "<" => got < self.value,
            "<=" => got <= self.value,
            "!=" => got != self.value,
            _ => got == self.value,
        }
    }

    pub fn describe(&self) -> String {
        format!("{} {}", self.op, fmt_number(self.value))
    }
}

/// A number as Prometheus prints it: integers without a fraction.
pub fn fmt_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// What an audit step expects: no findings at all, or (at least) findings of these checks.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", content = "checks", rename_all = "snake_case")]
pub enum FindingsExpect {
    Clean,
    Include(Vec<String>),
}

impl FindingsExpect {
    pub fn describe(&self) -> String {
        match self {
            Self::Clean => "no findings".into(),
            Self::Include(c) => format!("findings include {}", c.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn as_json(mv: &Move) -> serde_json::Value {
        serde_json::to_value(mv).unwrap()
    }

    #[test]
    fn ship_moves_parse_like_the_cli() {
        let a = ShipAction::parse("xwing land").unwrap();
        assert_eq!(a.pod, "xwing");
        assert_eq!(as_json(&a.mv), json!({"move": "land"}));
        assert_eq!(a.cli(), "lab ship xwing land");
        assert_eq!(a.timeout_ms, DEFAULT_SHIP_TIMEOUT_MS);

        let f = ShipAction::parse(
            "tiefighter fetch-logs ftp-secure --user deathstar --password darkside --timeout 2",
        )
        .unwrap();
        assert_eq!(as_json(&f.mv)["store"], "ftp-secure:21");
        assert_eq!(as_json(&f.mv)["user"], "deathstar");
        assert_eq!(f.timeout_ms, 2000);
        assert_eq!(
            f.cli(),
            "lab ship tiefighter fetch-logs ftp-secure --user deathstar --password darkside --timeout 2"
        );
        assert_eq!(f.label(), "tiefighter: fetch-logs ftp-secure");

        let h = ShipAction::parse("tiefighter http GET /v1/healthz").unwrap();
        assert_eq!(
            h.mv,
            serde_json::from_value(json!({"move": "http", "method": "GET", "url": "/v1/healthz"}))
                .unwrap()
        );

        let c = ShipAction::parse("deathstar connect ftp-vulnerable:21 --timeout 1.5").unwrap();
        assert_eq!(as_json(&c.mv)["timeout_ms"], 1500);
        assert!(
            c.cli()
                .starts_with("lab exec deathstar -- lab ship-move --json '{")
        );
        assert_eq!(c.request().options.timeout_ms, Some(1500));

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

        let landed = Outcome::Ok {
            status: 200,
            body: "Ship landed\n".into(),
            elapsed_ms: 3,
        };
        let denied = Outcome::HttpError {
            status: 403,
            body: "Access denied\r\n".into(),
            elapsed_ms: 3,
        };
        let dropped = Outcome::TimedOut { elapsed_ms: 5000 };
        let connected = Outcome::Connected {
            peer: "10.244.0.2:80".into(),
            elapsed_ms: 1,
        };
        let fetched = Outcome::FtpOk {
            files: vec![],
            content: String::new(),
            elapsed_ms: 1,
        };
        let ftp_denied = Outcome::FtpDenied {
            detail: "530".into(),
            elapsed_ms: 1,
        };
        assert!(Expect::Ok.matches(&classify_ship(&landed)));
        assert!(!Expect::Ok.matches(&classify_ship(&denied)));
        assert!(Expect::Blocked.matches(&classify_ship(&denied)));
        assert!(Expect::Blocked.matches(&classify_ship(&dropped)));
        assert!(!Expect::Blocked.matches(&classify_ship(&landed)));
        assert!(Expect::Http { status: 403 }.matches(&classify_ship(&denied)));
        assert!(Expect::Ok.matches(&classify_ship(&connected)));
        assert!(Expect::Ok.matches(&classify_ship(&fetched)));
        assert!(!Expect::FtpOk.matches(&classify_ship(&ftp_denied)));
        assert_eq!(classify_exec(Some(28), false), Got::Timeout);
        assert_eq!(classify_exec(None, true), Got::Timeout);
        assert_eq!(classify_exec(Some(7), false), Got::Refused);
        assert_eq!(classify_exec(Some(0), false), Got::Ok);
    }

    #[test]
    fn the_flood_move() {
        let f = ShipAction::parse("xwing flood 200 15").unwrap();
        assert_eq!(
            as_json(&f.mv),
            json!({"move": "flood", "connections": 200, "hold_ms": 15000})
        );
        assert_eq!(f.cli(), "lab ship xwing flood 200 15");
        assert_eq!(f.label(), "xwing: flood 200 15");
        let d = ShipAction::parse("xwing flood").unwrap();
        assert_eq!(as_json(&d.mv)["connections"], 100);
        assert_eq!(as_json(&d.mv)["hold_ms"], 20000);
        for bad in [
            "xwing flood many",
            "xwing flood 10 60",
            "xwing flood 0",
            "xwing flood 1 2 3",
        ] {
            assert!(ShipAction::parse(bad).is_err(), "{bad}");
        }
        let flood = |connected, refused, failed| Outcome::Flooded {
            connected,
            refused,
            failed,
            elapsed_ms: 15_000,
        };
        let (held, limited, starved) = (flood(200, 0, 0), flood(6, 194, 0), flood(150, 0, 50));
        assert_eq!(classify_ship(&held), Got::Ok);
        assert_eq!(classify_ship(&limited), Got::Refused);
        assert_eq!(classify_ship(&starved), Got::Timeout);
    }

    #[test]
    fn prefilter_commands_parse_like_the_cli() {
        let on = PrefilterAction::parse("bypass --node-port 30007 --unsafe").unwrap();
        assert_eq!(
            on,
            PrefilterAction::Change(
                serde_json::from_value(
                    json!({"action": "bypass", "node_port": 30007, "enabled": true, "unsafe": true})
                )
                .unwrap()
            )
        );
        assert_eq!(on.cli(), "lab prefilter bypass --node-port 30007 --unsafe");
        let off = PrefilterAction::parse("bypass --node-port 30007 --off").unwrap();
        assert_eq!(off.cli(), "lab prefilter bypass --node-port 30007 --off");
        let unconfirmed = PrefilterAction::parse("bypass --node-port 30007").unwrap();
        assert_eq!(unconfirmed.cli(), "lab prefilter bypass --node-port 30007");
        let deny =
            PrefilterAction::parse("update --cidr 198.51.100.0/24 --cidr 192.0.2.1").unwrap();
        assert_eq!(
            deny.cli(),
            "lab prefilter update --cidr 198.51.100.0/24 --cidr 192.0.2.1"
        );
        assert_eq!(
            PrefilterAction::parse("list").unwrap(),
            PrefilterAction::List
        );
        assert_eq!(
            PrefilterAction::parse("reset").unwrap(),
            PrefilterAction::Reset
        );
        for bad in [
            "",
            "update",
            "delete --node-port 1",
            "bypass --cidr 1.2.3.4",
            "bypass --unsafe",
            "bypass --node-port x",
            "bypass --node-port 30007 --unsafe --off",
            "list everything",
            "flush",
        ] {
            assert!(PrefilterAction::parse(bad).is_err(), "{bad}");
        }
        let state: model::PrefilterState = serde_json::from_value(
            json!({"interface": "ext0", "deny": ["198.51.100.0/24"], "bypass_node_ports": [30007]}),
        )
        .unwrap();
        assert_eq!(
            state.describe(),
            "XDP prefilter on ext0: deny 198.51.100.0/24; UNSAFE: NodePort 30007 skips every network policy"
        );
    }

    #[test]
    fn metric_queries_pick_lines_and_compare_totals() {
        let q = MetricQuery::parse(r#"lab_nodeport_connections_total{source="internet"}"#).unwrap();
        assert_eq!(q.name, "lab_nodeport_connections_total");
        let text = "# HELP lab_nodeport_connections_total x\n\
            lab_nodeport_connections_total{service=\"default/inventory\",node_port=\"30007\",source=\"internet\"} 3\n\
            lab_nodeport_connections_total{service=\"default/inventory\",node_port=\"30007\",source=\"internal\"} 5\n\
            lab_nodeport_connections_total_other{source=\"internet\"} 9\n";
        let got: Vec<f64> = text.lines().filter_map(|l| q.sample(l)).collect();
        assert_eq!(got, [3.0]);
        let all = MetricQuery::parse("lab_nodeport_connections_total").unwrap();
        assert_eq!(text.lines().filter_map(|l| all.sample(l)).sum::<f64>(), 8.0);
        assert_eq!(
            q.cli(),
            r#"lab metrics | grep '^lab_nodeport_connections_total[{ ]' | grep -F 'source="internet"'"#
        );
        let esc = MetricQuery::parse(r#"m{a="x \"y\"", b="z"}"#).unwrap();
        assert_eq!(
            esc.labels,
            [("a".into(), "x \"y\"".into()), ("b".into(), "z".into())]
        );
        assert_eq!(
            MetricQuery::parse("cilium_policy")
                .unwrap()
                .sample("cilium_policy 2"),
            Some(2.0)
        );
        for bad in ["", "{a=\"b\"}", "m{a=b}", "m{a=\"b\"", "9m", "m{a=\"b}"] {
            assert!(MetricQuery::parse(bad).is_err(), "{bad}");
        }
        let v = ValueExpect::parse("> 0").unwrap();
        assert!(v.holds(1.0) && !v.holds(0.0));
        assert_eq!(v.describe(), "> 0");
        assert!(ValueExpect::parse("0").unwrap().holds(0.0));
        assert!(ValueExpect::parse(">= 3").unwrap().holds(3.0));
        assert!(ValueExpect::parse("<2.5").unwrap().holds(2.0));
        assert!(ValueExpect::parse("= 4").unwrap().holds(4.0));
        assert!(ValueExpect::parse("more").is_err());
        assert_eq!(fmt_number(6.0), "6");
        assert_eq!(fmt_number(0.5), "0.5");
    }
}
