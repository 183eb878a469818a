//! Field paths such as `spec.ingress[0].toPorts[0].ports[0].port`: built from keys and
//! indexes, split into steps, and used to find a value inside a document.

use serde_json::Value;

/// `parent.key`, or `parent["key"]` when the key needs quoting; `key` at the root.
pub fn join_key(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && !key.contains(['.', '[', ']', '"', '\\']);
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{}]", Value::String(key.to_owned())),
    }
}

/// `parent[index]`.
pub fn join_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Splits a field path into its steps; `None` if it is not a well-formed path.
pub fn path_segments(path: &str) -> Option<Vec<Segment>> {
    let mut out = Vec::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'[' if bytes.get(i + 1) == Some(&b'"') => {
                // A quoted key: a JSON string followed by `]`.
                let mut de =
                    serde_json::Deserializer::from_str(&path[i + 1..]).into_iter::<String>();
                let key = de.next()?.ok()?;
                i += 1 + de.byte_offset();
                if bytes.get(i) != Some(&b']') {
                    return None;
                }
                i += 1;
                out.push(Segment::Key(key));
            }
            b'[' => {
                let end = path[i..].find(']')? + i;
                out.push(Segment::Index(path[i + 1..end].parse().ok()?));
                i = end + 1;
            }
            b'.' if !out.is_empty() && !matches!(bytes.get(i + 1), None | Some(b'.' | b'[')) => {
                i += 1
            }
            _ => {
                let end = path[i..].find(['.', '[']).map_or(path.len(), |e| e + i);
                if end == i {
                    return None;
                }
                out.push(Segment::Key(path[i..end].to_owned()));
                i = end;
            }
        }
    }
    Some(out)
}

/// Builds a path from steps (the inverse of [`path_segments`]).
pub fn path_from_segments<'a>(segments: impl IntoIterator<Item = &'a Segment>) -> String {
    let mut path = String::new();
    for s in segments {
        path = match s {
            Segment::Key(k) => join_key(&path, k),
            Segment::Index(i) => join_index(&path, *i),
        };
    }
    path
}

/// The path one step up; `None` for the root.
pub fn parent_path(path: &str) -> Option<String> {
    let mut segs = path_segments(path)?;
    segs.pop()?;
    Some(path_from_segments(&segs))
}

/// The value at `path` inside `value`.
pub fn value_at<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    let mut v = value;
    for s in path_segments(path)? {
        v = match (s, v) {
            (Segment::Key(k), Value::Object(m)) => m.get(&k)?,
            (Segment::Index(i), Value::Array(a)) => a.get(i)?,
            _ => return None,
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let p = join_key(
            &join_index(&join_key("spec", "ingress"), 0),
            "io.kubernetes.pod.namespace",
        );
        assert_eq!(p, r#"spec.ingress[0]["io.kubernetes.pod.namespace"]"#);
        let segs = path_segments(&p).unwrap();
        assert_eq!(
            segs,
            vec![
                Segment::Key("spec".into()),
                Segment::Key("ingress".into()),
                Segment::Index(0),
                Segment::Key("io.kubernetes.pod.namespace".into())
            ]
        );
        assert_eq!(path_from_segments(&segs), p);
        assert_eq!(parent_path(&p).as_deref(), Some("spec.ingress[0]"));
        assert_eq!(parent_path("spec").as_deref(), Some(""));
        assert_eq!(parent_path(""), None);
        assert_eq!(path_segments("a..b"), None);
    }
}
