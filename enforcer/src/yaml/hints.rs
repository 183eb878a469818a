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
            return self.error(path, format!("missing required field `{field}`"));
        }
        if message.contains(UNSUPPORTED_MARK) {
            return self
                .value_error(path, message)
                .with_kind(ErrorKind::Unsupported);
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

/// Rewrites serde's Rust-flavoured wording ("struct X", "u16", "a sequence", "a map") into YAML
/// terms. Only serde's own words are rewritten: quoted parts (the user's values, in `"..."` or
/// backticks) are kept as written, and each rewrite matches whole words, so that a word is never
/// rewritten twice ("a map" → "a mapping", never "a mappingping").
fn tidy_serde_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        out.push_str(&rephrase(&rest[..open]));
        let quote = rest.as_bytes()[open];
        // The closing quote: the next one of the same kind that is not escaped.
        let body = &rest[open + 1..];
        let mut close = None;
        let mut escaped = false;
        for (i, b) in body.bytes().enumerate() {
            match b {
                b'\\' if quote == b'"' => escaped = !escaped,
                b if b == quote && !escaped => {
                    close = Some(open + 1 + i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let Some(close) = close else {
            out.push_str(&rest[open..]);
            return out;
        };
        out.push_str(&rest[open..=close]);
        rest = &rest[close + 1..];
    }
    out.push_str(&rephrase(rest));
    out
}

/// [`tidy_serde_message`] on a part of a message outside quotes.
fn rephrase(text: &str) -> String {
    static REWRITES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
        [
            (r"\b(struct|enum) [A-Za-z0-9_]+", "a mapping"),
            (r"\bmap\b", "mapping"),
            (r"\bsequence\b", "list"),
            (r"\bu16\b", "a whole number from 0 to 65535"),
            (r"\bu32\b", "a whole number from 0 to 4294967295"),
            (r"\bu8\b", "a whole number from 0 to 255"),
            (r"\b(i32|i64|u64)\b", "a whole number"),
            (r"\bunit value\b", "null"),
        ]
        .into_iter()
        .map(|(re, to)| (Regex::new(re).unwrap(), to))
        .collect()
    });
    let mut s = text.to_owned();
    for (re, to) in REWRITES.iter() {
        if re.is_match(&s) {
            s = re.replace_all(&s, *to).into_owned();
        }
    }
    s
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

#[cfg(test)]
mod tests {
    use super::tidy_serde_message;

    #[test]
    fn serde_wording_becomes_yaml_wording_once() {
        for (serde, shown) in [
            (
                "invalid type: string \"x\", expected struct Rule",
                "invalid type: string \"x\", expected a mapping",
            ),
            (
                "invalid type: map, expected a sequence",
                "invalid type: mapping, expected a list",
            ),
            (
                "invalid type: sequence, expected a map",
                "invalid type: list, expected a mapping",
            ),
            (
                "invalid value: integer `70000`, expected u16",
                "invalid value: integer `70000`, expected a whole number from 0 to 65535",
            ),
            // The user's own words are kept as written.
            (
                "invalid type: string \"a map, a sequence \\\" struct X\", expected u8",
                "invalid type: string \"a map, a sequence \\\" struct X\", expected a whole number from 0 to 255",
            ),
            (
                "unknown variant `map`, expected `a`",
                "unknown variant `map`, expected `a`",
            ),
        ] {
            assert_eq!(tidy_serde_message(serde), shown);
        }
    }
}
