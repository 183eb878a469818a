//! Loading: saphyr-parser's event stream → one [`Document`] per non-empty YAML document, its
//! value and the [`Locations`] of its fields built in the same pass; `kind: List` flattened into
//! its items; syntax errors located, with hints for the usual mistakes.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScanError, Span, StrInput, Tag};
use serde_json::{Map, Value};

use super::{
    Document, ErrorKind, Located, Locations, Source, join_index, join_key, scalar::resolve_scalar,
};

/// Parses every document of a source. Empty documents are skipped; a `kind: List` (or any
/// `...List` kind) with an `items` list becomes one document per item. A YAML syntax error
/// stops parsing and is returned with the position the parser reports.
pub fn parse_documents(src: &Source) -> Result<Vec<Document>, Located> {
    let mut loader = Loader {
        file: &src.name,
        parser: Parser::new_from_str(&src.text),
        anchors: HashMap::new(),
    };
    let mut docs = Vec::new();
    loop {
        let (event, span) = loader.next()?;
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                loader.anchors.clear();
                let (event, span) = loader.next()?;
                let mut locations = Locations::default();
                let value = loader.node(event, span, "", &mut locations, 0)?;
                if value.is_null() {
                    continue;
                }
                let start_line = span.start.line().max(1);
                flatten_list(&src.name, value, locations, start_line, &mut docs);
            }
            other => {
                return Err(Located::new(
                    &src.name,
                    pos(span),
                    "",
                    format!("unexpected YAML event {other:?}"),
                )
                .with_kind(ErrorKind::Syntax));
            }
        }
    }
    Ok(docs)
}

fn flatten_list(
    file: &str,
    value: Value,
    locations: Locations,
    start_line: usize,
    docs: &mut Vec<Document>,
) {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array);
    if !is_list {
        docs.push(Document {
            file: file.to_owned(),
            index: docs.len(),
            start_line,
            value,
            locations,
        });
        return;
    }
    let Some(Value::Array(items)) = value.get("items") else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        if item.is_null() {
            continue;
        }
        let prefix = join_index("items", i);
        let locations = locations.subtree(&prefix);
        let start_line = locations.line_of("").map_or(start_line, |(l, _)| l);
        docs.push(Document {
            file: file.to_owned(),
            index: docs.len(),
            start_line,
            value: item.clone(),
            locations,
        });
    }
}

fn pos(m: Span) -> (usize, usize) {
    (m.start.line().max(1), m.start.col() + 1)
}

/// Nesting deeper than this is refused (it is never needed for manifests and policies, and
/// keeps recursion bounded).
const MAX_DEPTH: usize = 100;

struct Loader<'a> {
    file: &'a str,
    parser: Parser<'a, StrInput<'a>>,
    anchors: HashMap<usize, Value>,
}

impl<'a> Loader<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), Located> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(syntax_error(self.file, &e)),
            None => Ok((Event::StreamEnd, Span::default())),
        }
    }

    fn err(&self, span: Span, path: &str, msg: impl Into<String>) -> Located {
        Located::new(self.file, pos(span), path, msg)
    }

    fn node(
        &mut self,
        event: Event<'a>,
        span: Span,
        path: &str,
        locs: &mut Locations,
        depth: usize,
    ) -> Result<Value, Located> {
        if depth > MAX_DEPTH {
            return Err(self.err(
                span,
                path,
                format!("nesting is deeper than {MAX_DEPTH} levels"),
            ));
        }
        locs.set_value(path, pos(span));
        let (value, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let v = resolve_scalar(&text, style, tag.as_deref())
                    .map_err(|m| self.err(span, path, m))?;
                (v, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_collection_tag(tag.as_deref(), "seq", span, path)?;
                let mut items = Vec::new();
                loop {
                    let (ev, sp) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    let child = join_index(path, items.len());
                    items.push(self.node(ev, sp, &child, locs, depth + 1)?);
                }
                (Value::Array(items), anchor)
            }
            Event::MappingStart(anchor, tag) => {
                self.check_collection_tag(tag.as_deref(), "map", span, path)?;
                let mut map = Map::new();
                loop {
                    let (ev, key_span) = self.next()?;
                    let key = match ev {
                        Event::MappingEnd => break,
                        Event::Scalar(text, ..) => text.into_owned(),
                        Event::Alias(id) => match self.anchors.get(&id) {
                            Some(Value::String(s)) => s.clone(),
                            Some(v) if !v.is_array() && !v.is_object() => v.to_string(),
                            _ => {
                                return Err(self.err(
                                    key_span,
                                    path,
                                    "a mapping key must be a plain value",
                                ));
                            }
                        },
                        _ => {
                            return Err(self.err(
                                key_span,
                                path,
                                "complex mapping keys (a list or mapping used as a key) are not supported",
                            ));
                        }
                    };
                    let child = join_key(path, &key);
                    if map.contains_key(&key) {
                        let first = locs.line_of(&child).map_or(0, |(l, _)| l);
                        return Err(self
                            .err(
                                key_span,
                                &child,
                                format!("duplicate key `{key}` (first defined at line {first})"),
                            )
                            .with_hint(
                                "remove one of the two entries; YAML does not allow repeated keys",
                            ));
                    }
                    locs.set_key(child.clone(), pos(key_span));
                    let (ev, sp) = self.next()?;
                    let v = self.node(ev, sp, &child, locs, depth + 1)?;
                    map.insert(key, v);
                }
                (Value::Object(map), anchor)
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(v) => (v.clone(), 0),
                None => return Err(self.err(span, path, "alias refers to an unknown anchor")),
            },
            other => return Err(self.err(span, path, format!("unexpected YAML event {other:?}"))),
        };
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        Ok(value)
    }

    fn check_collection_tag(
        &self,
        tag: Option<&Tag>,
        want: &str,
        span: Span,
        path: &str,
    ) -> Result<(), Located> {
        match tag {
            None => Ok(()),
            Some(t) if t.is_yaml_core_schema() && t.suffix == want => Ok(()),
            Some(t) => Err(self.err(span, path, format!("unsupported YAML tag `{t}`"))),
        }
    }
}

/// A syntax error at the position the parser reports, with a hint when the cause is a usual one.
fn syntax_error(file: &str, err: &ScanError) -> Located {
    let m = err.marker();
    let info = err.info();
    let mut e =
        Located::new(file, (m.line().max(1), m.col() + 1), "", info).with_kind(ErrorKind::Syntax);
    if let Some(h) = syntax_hint(info) {
        e = e.with_hint(h);
    }
    e
}

fn syntax_hint(info: &str) -> Option<&'static str> {
    if info.contains("found a tab")
        || info.contains("tab character")
        || info.contains("tabs disallowed")
    {
        Some("YAML indentation must use spaces, not tabs")
    } else if info.contains("did not find expected <document start>") {
        Some("separate documents with a line containing only `---` (also between JSON objects)")
    } else if info.contains("mapping values are not allowed") {
        Some("check the indentation of this line, and quote values that contain `: `")
    } else if info.contains("did not find expected '-' indicator") {
        Some("list items at one level must all start with `- ` at the same indentation")
    } else if info.contains("did not find expected key") {
        Some("check the indentation: keys of one mapping must line up")
    } else if info.contains("unexpected end of stream") && info.contains("quoted") {
        Some("a quoted string is missing its closing quote")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> Vec<Document> {
        parse_documents(&Source::new("t.yaml", text)).unwrap()
    }

    #[test]
    fn locations_of_keys_items_and_fallback() {
        let d =
            &docs("# c\nspec:\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {org: empire}\n")
                [0];
        assert_eq!(d.start_line, 2);
        assert_eq!(d.locations.line_of("spec"), Some((2, 1)));
        assert_eq!(d.locations.line_of("spec.ingress"), Some((3, 3)));
        assert_eq!(d.locations.line_of("spec.ingress[0]"), Some((4, 5)));
        assert_eq!(
            d.locations
                .line_of("spec.ingress[0].fromEndpoints[0].matchLabels.org"),
            Some((5, 21))
        );
        assert_eq!(
            d.locations
                .value_of("spec.ingress[0].fromEndpoints[0].matchLabels.org"),
            Some((5, 26))
        );
        // Fallback to the nearest ancestor.
        assert_eq!(
            d.locations.line_of("spec.ingress[0].toPorts[3].ports"),
            Some((4, 5))
        );
        assert_eq!(d.locations.line_of("nothing.here"), d.locations.line_of(""));
    }

    #[test]
    fn multi_document_skips_empty_and_flattens_lists() {
        let text = "---\n---\na: 1\n---\n# only a comment\n---\nkind: List\nitems:\n- kind: A\n  x: 1\n- kind: B\n";
        let d = docs(text);
        assert_eq!(d.len(), 3);
        assert_eq!((d[0].index, d[0].start_line), (0, 3));
        assert_eq!(d[1].value["kind"], "A");
        assert_eq!((d[1].index, d[1].start_line), (1, 9));
        assert_eq!(d[1].locations.line_of("x"), Some((10, 3)));
        assert_eq!(d[2].start_line, 11);
    }

    #[test]
    fn json_documents() {
        let d = docs("{\"a\": {\"b\": [1, 2]}}\n---\n{\"c\": \"d\"}\n");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].value["a"]["b"][1], 2);
        assert_eq!(d[0].locations.value_of("a.b[1]"), Some((1, 17)));
    }

    #[test]
    fn syntax_errors_are_located() {
        let e = parse_documents(&Source::new("f.yaml", "a: [1, 2\nb: 3\n")).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str(), e.kind),
            (2, "", ErrorKind::Syntax)
        );
        let e = parse_documents(&Source::new("f.yaml", "a: 1\na: 2\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.yaml:2:1: a: duplicate key `a` (first defined at line 1)\n  hint: remove one of the two entries; YAML does not allow repeated keys"
        );
    }

    #[test]
    fn anchors_and_aliases() {
        let d = &docs("a: &x {b: 1}\nc: *x\n")[0];
        assert_eq!(d.value["c"]["b"], 1);
    }
}
