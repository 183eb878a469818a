//! Typed decoding: a document's value (or a part of it) → a Rust type, with serde's errors
//! located at the right line, and recovery so that one pass reports every problem, not only the
//! first.

use std::collections::{BTreeMap, HashSet};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    Document, Located, Segment, hints, join_key, parent_path, path_from_segments, path_segments,
};

/// The result of [`Document::decode`]: the value if it could be built (possibly after dropping
/// the offending fields, see `errors`), and every error found.
#[derive(Debug)]
pub struct Decoded<T> {
    pub value: Option<T>,
    pub errors: Vec<Located>,
    /// `false` when recovery removed list items, so list indexes in `value` no longer match the
    /// document's paths; further validation of `value` would point at the wrong lines.
    pub paths_exact: bool,
    /// With [`Document::decode_all`]: the paths where recovery put a placeholder (for a missing
    /// required field, or a list item of the wrong type), so that validation can go on with exact
    /// paths. What validation says at or under these paths is about the placeholder, not about
    /// what was written (see [`Placeholders::covers`]).
    pub placeholders: Placeholders,
}

/// Where [`Document::decode_all`] put placeholders.
#[derive(Clone, Debug, Default)]
pub struct Placeholders {
    /// Placeholder values: errors at or under these paths are about them.
    pub values: Vec<String>,
    /// Objects that got a placeholder for a missing field: errors about the object itself (at
    /// exactly this path) may be about the placeholder too.
    pub owners: Vec<String>,
}

impl Placeholders {
    /// Whether an error at `path` may be about a placeholder rather than the document.
    pub fn covers(&self, path: &str) -> bool {
        self.owners.iter().any(|o| o == path)
            || self.values.iter().any(|v| {
                path == v
                    || path
                        .strip_prefix(v.as_str())
                        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
            })
    }
}

/// Values tried in turn as a placeholder until one decodes.
fn placeholder_candidates() -> [Value; 5] {
    [
        Value::String(String::new()),
        Value::from(0),
        Value::Bool(false),
        Value::Object(serde_json::Map::new()),
        Value::Array(Vec::new()),
    ]
}

/// Recovery gives up after this many errors in one document.
const MAX_DECODE_ERRORS: usize = 50;

impl Document {
    /// Deserializes the value at `path` (`""` for the whole document), stopping at the first
    /// error.
    pub fn deserialize_at<T: DeserializeOwned>(&self, path: &str) -> Result<T, Vec<Located>> {
        let d = self.decode(path);
        match d.value {
            Some(v) if d.errors.is_empty() => Ok(v),
            _ => Err(d.errors),
        }
    }

    /// Deserializes the value at `path`, collecting as many errors as it can: after each error
    /// the offending field (or list item, or the object missing a required field) is dropped and
    /// decoding is retried, so a document with three misspelt fields reports all three.
    pub fn decode<T: DeserializeOwned>(&self, path: &str) -> Decoded<T> {
        self.decode_recovering(path, false)
    }

    /// Like [`Document::decode`], but a missing required field, or a list item of the wrong
    /// type, is replaced by a placeholder rather than dropping the object or the item, so that
    /// paths stay exact and the rest of the document can still be validated: one pass reports
    /// every problem. The value is for validation only (it holds placeholders); the paths of the
    /// placeholders are in [`Decoded::placeholders`].
    pub fn decode_all<T: DeserializeOwned>(&self, path: &str) -> Decoded<T> {
        self.decode_recovering(path, true)
    }

    fn decode_recovering<T: DeserializeOwned>(&self, path: &str, placeholders: bool) -> Decoded<T> {
        let Some(base) = self.get(path) else {
            return Decoded {
                value: None,
                errors: vec![self.error(path, "missing field")],
                paths_exact: true,
                placeholders: Placeholders::default(),
            };
        };
        let mut held = Placeholders::default();
        // The candidate each placeholder is at (index into `placeholder_candidates`).
        let mut tried: BTreeMap<String, usize> = BTreeMap::new();
        let base_segs = path_segments(path).unwrap_or_default();
        let mut value = base.clone();
        let mut errors = Vec::new();
        // Removed list items per list (in the document's coordinates), and removed keys.
        let mut removed_items: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut removed_keys: Vec<(String, String)> = Vec::new();
        loop {
            let err = match serde_path_to_error::deserialize::<_, T>(&value) {
                Ok(v) => {
                    return Decoded {
                        value: Some(v),
                        errors,
                        paths_exact: removed_items.is_empty(),
                        placeholders: held,
                    };
                }
                Err(e) => e,
            };
            // Translate the path of the (edited) value to the document's coordinates.
            let mut current = Vec::new();
            let mut original = base_segs.clone();
            for seg in err.path().iter() {
                use serde_path_to_error::Segment as S;
                match seg {
                    S::Seq { index } => {
                        let list = path_from_segments(&original);
                        let mut i = *index;
                        for r in removed_items.get(&list).into_iter().flatten() {
                            if *r <= i {
                                i += 1;
                            }
                        }
                        current.push(Segment::Index(*index));
                        original.push(Segment::Index(i));
                    }
                    S::Map { key } | S::Enum { variant: key } => {
                        current.push(Segment::Key(key.clone()));
                        original.push(Segment::Key(key.clone()));
                    }
                    S::Unknown => break,
                }
            }
            let orig_path = path_from_segments(&original);
            let message = err.inner().to_string();
            let missing = hints::parse_missing_field(&message);
            let suppressed = missing
                .as_ref()
                .is_some_and(|f| removed_keys.contains(&(orig_path.clone(), f.clone())));
            let about_placeholder = held.values.iter().any(|v| {
                Placeholders {
                    values: vec![v.clone()],
                    owners: vec![],
                }
                .covers(&orig_path)
            });
            if !suppressed && !about_placeholder {
                errors.push(self.serde_error(&orig_path, &message));
            }
            if current.is_empty() || errors.len() >= MAX_DECODE_ERRORS {
                break;
            }
            if placeholders {
                if let Some(field) = &missing
                    && let Some(Value::Object(m)) = value_at_segments_mut(&mut value, &current)
                {
                    // A missing required field: a placeholder in its place.
                    let at = join_key(&orig_path, field);
                    m.insert(field.clone(), placeholder_candidates()[0].clone());
                    tried.insert(at.clone(), 0);
                    held.values.push(at);
                    held.owners.push(orig_path.clone());
                    continue;
                }
                if let Some(n) = tried.get(&orig_path).copied() {
                    // A placeholder that does not decode: the next candidate (an unknown
                    // variant takes the first valid one). When none fits, recovery drops it
                    // below, as without placeholders.
                    let next = match hints::repair(&message, &Value::Null) {
                        Some(v) if message.starts_with("unknown variant") => Some(v),
                        _ => placeholder_candidates().into_iter().nth(n + 1),
                    };
                    if let (Some(next), Some(slot)) =
                        (next, value_at_segments_mut(&mut value, &current))
                    {
                        tried.insert(orig_path.clone(), n + 1);
                        *slot = next;
                        continue;
                    }
                } else if matches!(current.last(), Some(Segment::Index(_)))
                    && let Some(slot) = value_at_segments_mut(&mut value, &current)
                    && hints::repair(&message, slot).is_none()
                {
                    // A list item of the wrong type: a placeholder in its place.
                    *slot = placeholder_candidates()[0].clone();
                    tried.insert(orig_path.clone(), 0);
                    held.values.push(orig_path.clone());
                    continue;
                }
            }
            // Repair the value when the intent is clear, so the rest can still be checked with
            // exact paths: a misspelt value becomes its suggestion, a number or boolean where a
            // string belongs becomes that string.
            if let Some(slot) = value_at_segments_mut(&mut value, &current)
                && let Some(fixed) = hints::repair(&message, slot)
            {
                *slot = fixed;
                continue;
            }
            // Otherwise drop the offending part and try again.
            let last = current.pop().expect("not empty");
            original.pop();
            let Some(parent) = value_at_segments_mut(&mut value, &current) else {
                break;
            };
            match (last, parent) {
                (Segment::Key(k), Value::Object(m)) => {
                    m.remove(&k);
                    removed_keys.push((path_from_segments(&original), k));
                }
                (Segment::Index(i), Value::Array(a)) if i < a.len() => {
                    a.remove(i);
                    let list = path_from_segments(&original);
                    let mut orig_index = i;
                    for r in removed_items.get(&list).into_iter().flatten() {
                        if *r <= orig_index {
                            orig_index += 1;
                        }
                    }
                    let entry = removed_items.entry(list).or_default();
                    entry.push(orig_index);
                    entry.sort_unstable();
                }
                _ => break,
            }
        }
        Decoded {
            value: None,
            errors,
            paths_exact: false,
            placeholders: held,
        }
    }
}

/// The field paths that "did you mean" hints in `errors` point to (`spec.endpointSelector` for
/// a misspelt `spec.endpointSelecter`), so that a "missing field" error the misspelling explains
/// can be left out.
pub fn suggested_fields(errors: &[Located]) -> HashSet<String> {
    errors
        .iter()
        .filter(|e| e.message.starts_with("unknown field"))
        .filter_map(|e| {
            let hint = e.hint.as_deref()?.strip_prefix("did you mean `")?;
            let field = &hint[..hint.find('`')?];
            Some(join_key(&parent_path(&e.field)?, field))
        })
        .collect()
}

fn value_at_segments_mut<'v>(value: &'v mut Value, segs: &[Segment]) -> Option<&'v mut Value> {
    let mut v = value;
    for s in segs {
        v = match (s, v) {
            (Segment::Key(k), Value::Object(m)) => m.get_mut(k)?,
            (Segment::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::{Source, parse_documents};

    fn docs(text: &str) -> Vec<Document> {
        parse_documents(&Source::new("t.yaml", text)).unwrap()
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[expect(dead_code, reason = "only deserialized")]
    struct T {
        name: String,
        items: Option<Vec<Item>>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[expect(dead_code, reason = "only deserialized")]
    struct Item {
        from_endpoints: Option<Vec<String>>,
        port: Option<u16>,
    }

    #[test]
    fn decode_reports_every_unknown_field_at_its_line() {
        let d = &docs(
            "name: x\nitems:\n- fromEndpoint: []\n- port: 70000\n- portt: 1\n  fromEndpoints: [a]\n",
        )[0];
        let r = d.decode::<T>("");
        let shown: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "t.yaml:3:3: items[0].fromEndpoint: unknown field `fromEndpoint`\n  hint: did you mean `fromEndpoints`?",
                "t.yaml:4:9: items[1].port: invalid value: integer `70000`, expected a whole number from 0 to 65535\n  hint: ports are 0 to 65535",
                "t.yaml:5:3: items[2].portt: unknown field `portt`\n  hint: did you mean `port`?",
            ]
        );
        assert!(r.value.is_some());
    }

    #[test]
    fn decode_missing_field_and_type_hints() {
        let d = &docs("items:\n- port: \"80\"\n")[0];
        let r = d.decode::<T>("");
        let shown: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown[0],
            "t.yaml:2:9: items[0].port: invalid type: string \"80\", expected a whole number from 0 to 65535\n  hint: write the number without quotes"
        );
        assert_eq!(shown[1], "t.yaml:1:1: missing required field `name`");
    }

    #[test]
    fn messages_say_mapping_once() {
        let d = &docs("name: x\nitems:\n- 5\n")[0];
        let r = d.decode::<T>("");
        assert_eq!(
            r.errors[0].to_string(),
            "t.yaml:3:3: items[0]: invalid type: integer `5`, expected a mapping"
        );
    }
}
