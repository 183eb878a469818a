//! What a serde error means to someone editing YAML: the message in YAML terms, a hint ("did
//! you mean", "quote it"), the kind of error, and a repair that lets decoding go on.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::{Document, ErrorKind, Located, Segment, path_segments, suggest};

impl Document {
    /// Turns one serde error message at a field into a located error with a hint.
    pub(super) fn serde_error(&self, path: &str, message: &str) -> Located {
        if let Some((field, expected)) = parse_unknown(message, "unknown field `") {
            let mut e = self.error(path, format!("unknown field `{field}`"));
            e.hint = unknown_field_hint(self, path, &field, &expected);
            return e;
        }
        if let Some((variant, expected)) = parse_unknown(message, "unknown variant `") {
            let mut e = self.value_error(path, format!("`{variant}` is not a valid value here"));
            e.hint = Some(
                match suggest(&variant, expected.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("valid values: {}", backticked(&expected)),
                },
            );
            return e;
        }
        if let Some(field) = parse_missing_field(message) {
            let mut e = self.error(path, format!("missing required field `{field}`"));
            if field == "port" {
                e.hint = Some("write `port: \"80\"`; port \"0\" means every port".into());
            }
            return e;
        }
        if message.contains(UNSUPPORTED_MARK) {
            let e = self
                .value_error(path, message)
                .with_kind(ErrorKind::Unsupported);
            if message.starts_with("protocol") {
                return e.with_hint("the lab filters TCP, UDP and SCTP; leave `protocol` out (or write ANY) for all three");
            }
            return e;
        }
        let message = tidy_serde_message(message);
        let mut e = self.value_error(path, &message);
        e.hint = type_hint(&message, path, self.get(path));
        e
    }
}

/// A replacement for a value serde refused, when the intended value is clear.
pub(super) fn repair(message: &str, value: &Value) -> Option<Value> {
    if let Some((variant, expected)) = parse_unknown(message, "unknown variant `") {
        let pick = suggest(&variant, expected.iter().map(String::as_str))
            .or(expected.first().map(String::as_str))?;
        return Some(Value::String(pick.to_owned()));
    }
    if message.starts_with("invalid type:") && message.contains("expected a string") {
        return match value {
            Value::Number(n) => Some(Value::String(n.to_string())),
            Value::Bool(b) => Some(Value::String(b.to_string())),
            _ => None,
        };
    }
    None
}

/// The words every "valid upstream, not in the lab" message contains; custom deserializers
/// that refuse such a value include it so the error is classified [`ErrorKind::Unsupported`].
pub const UNSUPPORTED_MARK: &str = "but not supported by the lab yet";

/// `unknown field `x`, expected one of `a`, `b`` → (`x`, [`a`, `b`]).
fn parse_unknown(message: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    let name = rest[..end].to_owned();
    let expected = rest[end + 1..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((name, expected))
}

pub(super) fn parse_missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

fn backticked(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn unknown_field_hint(
    doc: &Document,
    path: &str,
    field: &str,
    expected: &[String],
) -> Option<String> {
    let is_selector = expected.iter().any(|e| e == "matchLabels")
        && expected.iter().any(|e| e == "matchExpressions");
    if field == "<<" {
        return Some("YAML merge keys (`<<`) are not supported; repeat the fields instead".into());
    }
    if is_selector
        && doc
            .get(path)
            .is_some_and(|v| !v.is_object() && !v.is_array())
    {
        let value = doc.get(path).map(|v| v.to_string()).unwrap_or_default();
        return Some(format!(
            "labels of a selector go under `matchLabels`, e.g. `matchLabels: {{{field}: {value}}}`"
        ));
    }
    if field == "rules" && expected.len() == 1 && expected[0] == "ports" {
        return Some("deny rules cannot have L7 rules: only `ports` is allowed in the toPorts of ingressDeny/egressDeny".into());
    }
    if expected.is_empty() {
        return Some("no fields are allowed here".into());
    }
    match suggest(field, expected.iter().map(String::as_str)) {
        Some(s) => Some(format!("did you mean `{s}`?")),
        None => Some(format!("valid fields here: {}", backticked(expected))),
    }
}

/// Rewrites serde's Rust-flavoured wording ("struct X", "u16", "a sequence") into YAML terms.
fn tidy_serde_message(message: &str) -> String {
    static STRUCT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(struct|enum) [A-Za-z0-9_]+").unwrap());
    let m = STRUCT.replace_all(message, "a mapping");
    m.replace("a map,", "a mapping,")
        .replace("expected a map", "expected a mapping")
        .replace("invalid type: map,", "invalid type: mapping,")
        .replace("sequence", "list")
        .replace("expected u16", "expected a whole number from 0 to 65535")
        .replace(
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        )
        .replace("expected i32", "expected a whole number")
        .replace("expected u8", "expected a whole number from 0 to 255")
        .replace("unit value", "null")
}

fn type_hint(message: &str, path: &str, value: Option<&Value>) -> Option<String> {
    if message.contains("expected a string") {
        if let Some(v @ (Value::Number(_) | Value::Bool(_))) = value {
            return Some(match path_segments(path).and_then(|mut s| s.pop()) {
                Some(Segment::Key(k)) if k == "port" => format!(
                    "quote it: `port: \"{v}\"` (the CRD declares ports strings; the API server refuses a number)"
                ),
                Some(Segment::Key(k)) => format!("quote it: `{k}: \"{v}\"`"),
                _ => format!("quote it: \"{v}\""),
            });
        }
        if let Some(Value::Null) = value {
            return Some(
                "the value is empty; write a quoted string (\"\" for an empty one)".into(),
            );
        }
    }
    if message.contains("invalid type: mapping, expected a list") {
        return Some("this field takes a list: start each item with `- `".into());
    }
    if message.contains("invalid type: list, expected a mapping") {
        return Some(
            "this field takes a single mapping, not a list: remove the leading `- `".into(),
        );
    }
    if message.contains("invalid type: string") && message.contains("expected a whole number") {
        return Some("write the number without quotes".into());
    }
    if message.contains("invalid value")
        && message.contains("expected a whole number from 0 to 65535")
    {
        return Some("ports are 0 to 65535".into());
    }
    None
}
