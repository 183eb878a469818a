//! Plain scalars resolved with the YAML 1.2 core schema (as serde_yaml_ng does): `true`,
//! `null`, `~`, `80`, `0x1F`, `1.5`; quoted scalars and `!!str` are strings.

use std::sync::LazyLock;

use regex::Regex;
use saphyr_parser::{ScalarStyle, Tag};
use serde_json::Value;

static INT_DEC: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[-+]?[0-9]+$").unwrap());
static FLOAT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$").unwrap());

/// YAML 1.2 core schema resolution of one scalar.
pub(super) fn resolve_scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
) -> Result<Value, String> {
    if let Some(tag) = tag {
        if tag.handle.is_empty() && tag.suffix == "!" {
            return Ok(Value::String(text.to_owned())); // non-specific tag `!`: a string
        }
        if !tag.is_yaml_core_schema() {
            return Err(format!("unsupported YAML tag `{tag}`"));
        }
        let v = match tag.suffix.as_str() {
            "str" => Some(Value::String(text.to_owned())),
            "null" => matches!(text, "" | "~" | "null" | "Null" | "NULL").then_some(Value::Null),
            "bool" => match text {
                "true" | "True" | "TRUE" => Some(Value::Bool(true)),
                "false" | "False" | "FALSE" => Some(Value::Bool(false)),
                _ => None,
            },
            "int" => resolve_int(text),
            "float" => resolve_int(text).or_else(|| resolve_float(text)),
            _ => return Err(format!("unsupported YAML tag `{tag}` on a scalar")),
        };
        return v.ok_or_else(|| format!("`{text}` is not a valid `{tag}`"));
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.to_owned()));
    }
    Ok(match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => resolve_int(text)
            .or_else(|| resolve_float(text))
            .unwrap_or_else(|| Value::String(text.to_owned())),
    })
}

fn resolve_int(text: &str) -> Option<Value> {
    if let Some(hex) = text.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok().map(Value::from);
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return u64::from_str_radix(oct, 8).ok().map(Value::from);
    }
    if !INT_DEC.is_match(text) {
        return None;
    }
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::from(i));
    }
    if let Ok(u) = text.trim_start_matches('+').parse::<u64>() {
        return Some(Value::from(u));
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
}

fn resolve_float(text: &str) -> Option<Value> {
    if FLOAT.is_match(text) {
        return text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number);
    }
    // `.inf` and `.nan` have no JSON form; they stay strings.
    None
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::yaml::{Source, parse_documents};

    #[test]
    fn scalars_follow_the_core_schema() {
        let d = &parse_documents(&Source::new(
            "t.yaml",
            "a: 80\nb: \"80\"\nc: true\nd: ~\ne: 1.5\nf: 0x10\ng: !!str 80\nh: yes\ni: -3\n",
        ))
        .unwrap()[0];
        let v = &d.value;
        assert_eq!(v["a"], Value::from(80));
        assert_eq!(v["b"], Value::from("80"));
        assert_eq!(v["c"], Value::from(true));
        assert_eq!(v["d"], Value::Null);
        assert_eq!(v["e"], Value::from(1.5));
        assert_eq!(v["f"], Value::from(16));
        assert_eq!(v["g"], Value::from("80"));
        assert_eq!(v["h"], Value::from("yes"));
        assert_eq!(v["i"], Value::from(-3));
    }
}
