//! Loading: saphyr-parser's event stream → one [`Document`] per non-empty YAML document, its
//! value and the [`Locations`] of its fields built in the same pass; `kind: List` flattened into
//! its items; syntax errors located, with hints for the usual mistakes.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, StrInput, Tag};
use serde_json::{Map, Value};

use super::{
    Document, ErrorKind, Located, Locations, MAX_SOURCE_BYTES, Source, join_index, join_key,
    scalar::resolve_scalar,
};

/// Parses every document of a source. Empty documents are skipped; a `kind: List` (or any
/// `...List` kind) with an `items` list becomes one document per item. A YAML syntax error
/// stops parsing and is returned with the position the parser reports.
///
/// Bounded, whatever the input: a source longer than [`MAX_SOURCE_BYTES`], nesting deeper than
/// [`MAX_DEPTH`], more than [`MAX_VALUES`] values, or aliases that expand to more than
/// [`MAX_ALIAS_VALUES`] values (a "billion laughs" document) is an error naming the file. So is a
/// NUL byte (a binary file).
pub fn parse_documents(src: &Source) -> Result<Vec<Document>, Located> {
    check_text(src)?;
    let mut loader = Loader {
        file: &src.name,
        parser: Parser::new_from_str(&src.text),
        anchors: HashMap::new(),
        values: 0,
        alias_values: 0,
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
                let (value, _) = loader.node(event, span, "", &mut locations, 0)?;
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
/// keeps recursion bounded), also when an alias puts a deep value deep inside another.
pub const MAX_DEPTH: usize = 100;

/// The most values (scalars, lists and mappings, aliases counted at every use) one source may
/// hold: ten times a policy of 10 000 rules.
pub const MAX_VALUES: usize = 1_000_000;

/// The most values anchors and aliases may copy in one source. Aliases are for repeating a few
/// lines; a few hundred bytes of nested aliases (a "billion laughs") would otherwise expand to
/// billions.
pub const MAX_ALIAS_VALUES: usize = 100_000;

/// A value's size: how many values it holds (itself included) and how deep it nests.
#[derive(Clone, Copy)]
struct Size {
    values: usize,
    height: usize,
}

struct Loader<'a> {
    file: &'a str,
    parser: Parser<'a, StrInput<'a>>,
    anchors: HashMap<usize, (Value, Size)>,
    /// Values built so far in this source, aliases counted at every use.
    values: usize,
    /// Of which built by expanding aliases.
    alias_values: usize,
}

/// The plain scalars YAML 1.1 (and so `kubectl`, through go-yaml) reads as booleans beyond
/// `true`/`false`; YAML 1.2, which the lab reads, keeps them strings.
fn is_yaml11_bool(text: &str) -> bool {
    matches!(
        text,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// Refuses, naming the file, a text too large to parse or that is not text (a NUL byte).
fn check_text(src: &Source) -> Result<(), Located> {
    let len = src.text.len();
    if len > MAX_SOURCE_BYTES {
        return Err(Located::new(
            &src.name,
            (1, 1),
            "",
            format!(
                "the file is {} bytes; the lab reads policy and manifest files of at most {} bytes ({} MiB)",
                len,
                MAX_SOURCE_BYTES,
                MAX_SOURCE_BYTES >> 20
            ),
        )
        .with_kind(ErrorKind::Syntax)
        .with_hint("split it into smaller files (a directory of files can be given with -f)"));
    }
    if let Some(at) = src.text.find('\0') {
        let before = &src.text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        return Err(Located::new(
            &src.name,
            (line, column),
            "",
            "the file contains a NUL byte (\\0); YAML and JSON are text",
        )
        .with_kind(ErrorKind::Syntax)
        .with_hint("is this a binary file, or text saved as UTF-16? Save it as UTF-8 text"));
    }
    Ok(())
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

    /// Counts `n` more values (of which `aliased` by expanding an alias), refusing when the
    /// source grows past the bounds.
    fn count(&mut self, n: usize, aliased: bool, span: Span, path: &str) -> Result<(), Located> {
        self.values = self.values.saturating_add(n);
        if aliased {
            self.alias_values = self.alias_values.saturating_add(n);
            if self.alias_values > MAX_ALIAS_VALUES {
                return Err(self
                    .err(
                        span,
                        path,
                        format!(
                            "anchors and aliases in this file copy more than {MAX_ALIAS_VALUES} values; refusing what looks like an alias bomb (\"billion laughs\")"
                        ),
                    )
                    .with_hint("use aliases only to repeat a few lines; write the content out instead of nesting aliases"));
            }
        }
        if self.values > MAX_VALUES {
            return Err(self
                .err(
                    span,
                    path,
                    format!("the file holds more than {MAX_VALUES} values"),
                )
                .with_hint("split it into smaller files"));
        }
        Ok(())
    }

    fn too_deep(&self, span: Span, path: &str) -> Located {
        // The path of a deep value is long; the error names its start.
        let shown: String = path.chars().take(80).collect();
        let shown = if shown.len() < path.len() {
            format!("{shown}…")
        } else {
            shown
        };
        self.err(
            span,
            &shown,
            format!("nesting is deeper than {MAX_DEPTH} levels"),
        )
    }

    fn node(
        &mut self,
        event: Event<'a>,
        span: Span,
        path: &str,
        locs: &mut Locations,
        depth: usize,
    ) -> Result<(Value, Size), Located> {
        if depth > MAX_DEPTH {
            return Err(self.too_deep(span, path));
        }
        locs.set_value(path, pos(span));
        let (value, size, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, false, span, path)?;
                if style == ScalarStyle::Plain && tag.is_none() && is_yaml11_bool(&text) {
                    locs.mark_yaml11_bool(path);
                }
                let v = resolve_scalar(&text, style, tag.as_deref())
                    .map_err(|m| self.err(span, path, m))?;
                let size = Size {
                    values: 1,
                    height: 1,
                };
                (v, size, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_collection_tag(tag.as_deref(), "seq", span, path)?;
                self.count(1, false, span, path)?;
                let mut items = Vec::new();
                let mut size = Size {
                    values: 1,
                    height: 1,
                };
                loop {
                    let (ev, sp) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    let child = join_index(path, items.len());
                    let (v, s) = self.node(ev, sp, &child, locs, depth + 1)?;
                    size.values += s.values;
                    size.height = size.height.max(s.height + 1);
                    items.push(v);
                }
                (Value::Array(items), size, anchor)
            }
            Event::MappingStart(anchor, tag) => {
                self.check_collection_tag(tag.as_deref(), "map", span, path)?;
                self.count(1, false, span, path)?;
                let mut map = Map::new();
                let mut size = Size {
                    values: 1,
                    height: 1,
                };
                loop {
                    let (ev, key_span) = self.next()?;
                    let key = match ev {
                        Event::MappingEnd => break,
                        Event::Scalar(text, ..) => text.into_owned(),
                        Event::Alias(id) => match self.anchors.get(&id).map(|(v, _)| v) {
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
                    let (v, s) = self.node(ev, sp, &child, locs, depth + 1)?;
                    size.values += s.values;
                    size.height = size.height.max(s.height + 1);
                    map.insert(key, v);
                }
                (Value::Object(map), size, anchor)
            }
            Event::Alias(id) => {
                let Some(&(_, size)) = self.anchors.get(&id) else {
                    return Err(self.err(span, path, "alias refers to an unknown anchor"));
                };
                // Checked before the value is copied: the copy is what must stay bounded.
                if depth + size.height > MAX_DEPTH + 1 {
                    return Err(self.too_deep(span, path));
                }
                self.count(size.values, true, span, path)?;
                let value = self.anchors[&id].0.clone();
                (value, size, 0)
            }
            other => return Err(self.err(span, path, format!("unexpected YAML event {other:?}"))),
        };
        if anchor > 0 {
            // The anchor keeps a copy: counted like an alias's, so that nested anchors cannot
            // multiply the values either.
            self.count(size.values, true, span, path)?;
            self.anchors.insert(anchor, (value.clone(), size));
        }
        Ok((value, size))
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

    fn error(text: &str) -> Located {
        parse_documents(&Source::new("bomb.yaml", text)).unwrap_err()
    }

    /// The classic "billion laughs": nine levels of nine aliases, 10^9 strings from a few
    /// hundred bytes. Refused as soon as the copies pass the bound, naming the file.
    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let (prev, next) = (w[0], w[1]);
            let items = vec![format!("*{prev}"); 9].join(",");
            text.push_str(&format!("{next}: &{next} [{items}]\n"));
        }
        assert!(text.len() < 400, "{}", text.len());
        let e = error(&text);
        assert_eq!(e.file, "bomb.yaml");
        assert!(e.message.contains("alias bomb"), "{e}");
        assert!(e.message.contains(&MAX_ALIAS_VALUES.to_string()), "{e}");
        // Aliases used as they are meant to be are fine.
        let d = &docs("base: &b {app: web, tier: front}\none: *b\ntwo: *b\n")[0];
        assert_eq!(d.value["two"]["tier"], "front");
    }

    #[test]
    fn nesting_is_bounded_also_through_aliases() {
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_DEPTH + 50),
            "]".repeat(MAX_DEPTH + 50)
        );
        let e = error(&deep);
        assert_eq!(e.file, "bomb.yaml");
        assert!(
            e.message.contains("nesting is deeper than 100 levels"),
            "{e}"
        );
        // Each anchor nests 60 levels: fine alone, too deep when one is put inside the other.
        let sixty = |inner: &str| format!("{}{inner}{}", "[".repeat(60), "]".repeat(60));
        let text = format!("a: &a {}\nb: {}\n", sixty("1"), sixty("*a"));
        let e = error(&text);
        assert!(e.message.contains("nesting is deeper"), "{e}");
        assert_eq!(e.line, 2);
        assert!(
            parse_documents(&Source::new(
                "ok.yaml",
                format!("a: &a {}\nb: *a\n", sixty("1"))
            ))
            .is_ok()
        );
    }

    #[test]
    fn large_files_are_refused_by_name() {
        let text = "a: 1\n".repeat((50 << 20) / 5);
        assert!(text.len() > MAX_SOURCE_BYTES);
        let e = error(&text);
        assert_eq!(
            (e.file.as_str(), e.line, e.kind),
            ("bomb.yaml", 1, ErrorKind::Syntax)
        );
        assert!(e.message.contains("at most 4194304 bytes"), "{e}");
        // Reading one from disk is refused before it is read, naming it.
        let dir = std::env::temp_dir().join(format!("lab-yaml-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.yaml");
        std::fs::write(&big, &text).unwrap();
        let e = Source::read(big.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("big.yaml"), "{e}");
        assert!(e.to_string().contains("larger than"), "{e}");
        let latin1 = dir.join("latin1.yaml");
        std::fs::write(&latin1, b"name: caf\xe9\n").unwrap();
        let e = Source::read(latin1.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("latin1.yaml: not UTF-8"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_nul_byte_is_reported_as_such() {
        let e = error("a: 1\nb: x\0y\n");
        assert_eq!(
            e.to_string(),
            "bomb.yaml:2:5: the file contains a NUL byte (\\0); YAML and JSON are text\n  hint: is this a binary file, or text saved as UTF-16? Save it as UTF-8 text"
        );
        assert_eq!(e.kind, ErrorKind::Syntax);
    }

    #[test]
    fn too_many_values_are_refused() {
        let text = "- 1\n".repeat(MAX_VALUES + 1);
        assert!(text.len() < MAX_SOURCE_BYTES);
        let e = error(&text);
        assert!(e.message.contains("more than 1000000 values"), "{e}");
    }
}
