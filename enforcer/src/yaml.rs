//! Located YAML documents: what users write, with every field's line and column, and errors
//! that name the file, line and field and say what would be valid.
//!
//! The pieces, in the order a file goes through them:
//!
//! - [`Source`]: a file's name and text (a path, `-` for stdin, or `<web editor>`).
//! - [`parse_documents`]: saphyr-parser's event stream → one [`Document`] per non-empty YAML
//!   document (`---`), each holding a `serde_json::Value` and the [`Locations`] of its fields, built
//!   in the same pass so the two always agree. JSON is YAML, so JSON files work too. A Kubernetes
//!   `kind: List` with `items:` is flattened into one document per item.
//! - [`Document::decode`]: the value (or a sub-path) → a typed struct, with serde errors turned
//!   into [`Located`] errors at the right line, "did you mean" hints for misspelt fields and values,
//!   and error recovery so one pass reports every unknown field, not just the first.
//! - [`Located`]: one error, printed as `FILE:LINE:COL: FIELD: MESSAGE` plus an optional
//!   `  hint: ...` line; serializable for the web editor.
//! - [`names`]: Kubernetes name rules (DNS-1123 labels and subdomains, IANA port names).
//!
//! Field paths are written `spec.ingress[0].toPorts[0].ports[0].port`: keys joined by `.`, list
//! indexes in brackets, the root is `""`. A key that contains `.`, `[`, `]`, `"` or `\`, or is
//! empty, is written in brackets as a JSON string: `matchLabels["app.kubernetes.io/name"]`.
//!
//! Plain scalars are resolved with the YAML 1.2 core schema (as serde_yaml_ng does): `true`,
//! `null`, `~`, `80`, `0x1F`, `1.5`; quoted scalars are strings. Mapping keys are always strings.
//! Duplicate keys are errors. Anchors and aliases work; merge keys (`<<`) do not.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::LazyLock,
};

use regex::Regex;
use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, StrInput, Tag};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

/// A file's name and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// A file path, `-` for standard input, or `<web editor>`.
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }

    /// Reads a file, or standard input when `path` is `-`.
    pub fn read(path: &str) -> std::io::Result<Self> {
        let text = if path == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(path)?
        };
        Ok(Source::new(path, text))
    }
}

/// Where an object came from: file, document index (0-based, among the file's non-empty
/// documents after `kind: List` flattening) and the line the document starts on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SourceRef {
    pub file: String,
    pub document: usize,
    pub line: usize,
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} (document {})",
            self.file, self.line, self.document
        )
    }
}

/// What kind of problem a [`Located`] error reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// The text is not valid YAML.
    Syntax,
    /// The document is not a valid object: wrong type, unknown field, bad value.
    Invalid,
    /// Valid upstream (Cilium or Kubernetes) but not implemented by the lab yet.
    Unsupported,
}

/// One error at a place in a file.
///
/// Displayed as `FILE:LINE:COL: FIELD: MESSAGE` (without `FIELD: ` when the field is the
/// document root or the error is a syntax error), followed by `\n  hint: HINT` when there is a
/// hint. Lines and columns are 1-based.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Located {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Field path such as `spec.ingress[0].fromEndpoints`; `""` for syntax errors and the root.
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
    pub kind: ErrorKind,
}

impl Located {
    pub fn new(
        file: impl Into<String>,
        (line, column): (usize, usize),
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Located {
            file: file.into(),
            line,
            column,
            field: field.into(),
            message: message.into(),
            hint: None,
            kind: ErrorKind::Invalid,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    fn syntax(file: &str, err: &ScanError) -> Self {
        let m = err.marker();
        let info = err.info();
        let mut e = Located::new(file, (m.line().max(1), m.col() + 1), "", info)
            .with_kind(ErrorKind::Syntax);
        if let Some(h) = syntax_hint(info) {
            e = e.with_hint(h);
        }
        e
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Located {}

/// Sorts errors by position (stable, so errors at one place keep their order) and drops
/// exact duplicates.
pub fn sort_errors(errors: &mut Vec<Located>) {
    errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    errors.dedup();
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

// ---------------------------------------------------------------------------------------------
// Field paths

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

// ---------------------------------------------------------------------------------------------
// Locations

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Place {
    /// Where the key is, for mapping entries.
    key: Option<(usize, usize)>,
    /// Where the value starts.
    value: (usize, usize),
}

/// Field path → 1-based (line, column), for one document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locations {
    places: BTreeMap<String, Place>,
}

impl Locations {
    /// Where the field is written: the key of a mapping entry, the start of a list item or of
    /// the root. Falls back to the nearest ancestor that exists.
    pub fn line_of(&self, path: &str) -> Option<(usize, usize)> {
        self.nearest(path).map(|p| p.key.unwrap_or(p.value))
    }

    /// Where the field's value starts (for errors about the value itself, such as a bad CIDR).
    /// Falls back to the nearest ancestor's [`line_of`](Self::line_of).
    pub fn value_of(&self, path: &str) -> Option<(usize, usize)> {
        match self.places.get(path) {
            Some(p) => Some(p.value),
            None => self.line_of(path),
        }
    }

    /// Whether the document has exactly this field.
    pub fn contains(&self, path: &str) -> bool {
        self.places.contains_key(path)
    }

    /// All recorded paths, in sorted order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.places.keys().map(String::as_str)
    }

    fn nearest(&self, path: &str) -> Option<&Place> {
        if let Some(p) = self.places.get(path) {
            return Some(p);
        }
        let mut segs = path_segments(path).unwrap_or_default();
        while segs.pop().is_some() {
            if let Some(p) = self.places.get(&path_from_segments(&segs)) {
                return Some(p);
            }
        }
        self.places.get("")
    }

    fn set_key(&mut self, path: String, key: (usize, usize)) {
        self.places.insert(
            path,
            Place {
                key: Some(key),
                value: key,
            },
        );
    }

    fn set_value(&mut self, path: &str, value: (usize, usize)) {
        match self.places.get_mut(path) {
            Some(p) => p.value = value,
            None => {
                self.places
                    .insert(path.to_owned(), Place { key: None, value });
            }
        }
    }

    /// The locations under `prefix`, re-rooted at `prefix` (used to flatten `kind: List`).
    fn subtree(&self, prefix: &str) -> Locations {
        let mut out = Locations::default();
        for (path, place) in &self.places {
            let rest = if path == prefix {
                Some("")
            } else {
                path.strip_prefix(prefix)
                    .filter(|r| r.starts_with(['.', '[']))
            };
            if let Some(rest) = rest {
                let rest = rest.strip_prefix('.').unwrap_or(rest);
                out.places.insert(rest.to_owned(), *place);
            }
        }
        if let Some(root) = out.places.get_mut("") {
            root.key = None;
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Documents

/// One non-empty YAML document of a [`Source`].
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The source's name (copied so errors can name the file).
    pub file: String,
    /// 0-based among the source's non-empty documents (after `kind: List` flattening).
    pub index: usize,
    /// 1-based line where the document's content starts.
    pub start_line: usize,
    pub value: Value,
    pub locations: Locations,
}

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
            Some(Err(e)) => Err(Located::syntax(self.file, &e)),
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

static INT_DEC: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[-+]?[0-9]+$").unwrap());
static FLOAT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$").unwrap());

/// YAML 1.2 core schema resolution of one scalar.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
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

// ---------------------------------------------------------------------------------------------
// Typed decoding with located errors

/// The result of [`Document::decode`]: the value if it could be built (possibly after dropping
/// the offending fields, see `errors`), and every error found.
#[derive(Debug)]
pub struct Decoded<T> {
    pub value: Option<T>,
    pub errors: Vec<Located>,
    /// `false` when recovery removed list items, so list indexes in `value` no longer match the
    /// document's paths; further validation of `value` would point at the wrong lines.
    pub paths_exact: bool,
}

/// Recovery gives up after this many errors in one document.
const MAX_DECODE_ERRORS: usize = 50;

impl Document {
    /// Where the document is, for objects parsed from it.
    pub fn source_ref(&self) -> SourceRef {
        SourceRef {
            file: self.file.clone(),
            document: self.index,
            line: self.start_line,
        }
    }

    /// The value at a field path.
    pub fn get(&self, path: &str) -> Option<&Value> {
        value_at(&self.value, path)
    }

    /// An error at the field (its key, see [`Locations::line_of`]).
    pub fn error(&self, path: &str, message: impl Into<String>) -> Located {
        let at = self.locations.line_of(path).unwrap_or((self.start_line, 1));
        Located::new(&self.file, at, path, message)
    }

    /// An error about the field's value, at the value's position.
    pub fn value_error(&self, path: &str, message: impl Into<String>) -> Located {
        let at = self
            .locations
            .value_of(path)
            .unwrap_or((self.start_line, 1));
        Located::new(&self.file, at, path, message)
    }

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
        let Some(base) = self.get(path) else {
            return Decoded {
                value: None,
                errors: vec![self.error(path, "missing field")],
                paths_exact: true,
            };
        };
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
            let missing = parse_missing_field(&message);
            let suppressed = missing
                .as_ref()
                .is_some_and(|f| removed_keys.contains(&(orig_path.clone(), f.clone())));
            if !suppressed {
                errors.push(self.serde_error(&orig_path, &message));
            }
            if current.is_empty() || errors.len() >= MAX_DECODE_ERRORS {
                break;
            }
            // Repair the value when the intent is clear, so the rest can still be checked with
            // exact paths: a misspelt value becomes its suggestion, a number or boolean where a
            // string belongs becomes that string.
            if let Some(slot) = value_at_segments_mut(&mut value, &current)
                && let Some(fixed) = repair(&message, slot)
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
        }
    }

    /// Turns one serde error message at a field into a located error with a hint.
    fn serde_error(&self, path: &str, message: &str) -> Located {
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
        e.hint = type_hint(&message, self.get(path));
        e
    }
}

/// A replacement for a value serde refused, when the intended value is clear.
fn repair(message: &str, value: &Value) -> Option<Value> {
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

/// The field paths that "did you mean" hints in `errors` point to (`spec.endpointSelector` for
/// a misspelt `spec.endpointSelecter`), so that a "missing field" error the misspelling explains
/// can be left out.
pub fn suggested_fields(errors: &[Located]) -> std::collections::HashSet<String> {
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

/// The words every "valid upstream, not in the lab" message contains; custom deserializers
/// that refuse such a value include it so the error is classified [`ErrorKind::Unsupported`].
pub const UNSUPPORTED_MARK: &str = "but not supported by the lab yet";

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

fn parse_missing_field(message: &str) -> Option<String> {
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

fn type_hint(message: &str, value: Option<&Value>) -> Option<String> {
    if message.contains("expected a string") {
        if let Some(v @ (Value::Number(_) | Value::Bool(_))) = value {
            return Some(format!("quote it: \"{v}\""));
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

// ---------------------------------------------------------------------------------------------
// Suggestions

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `input`, if one is close enough to be a likely typo: the same word
/// in another case, a small edit distance (at most 2, or a third of the length), or one
/// containing the other (`endpoints` → `fromEndpoints`).
pub fn suggest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = input.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        let cl = c.to_lowercase();
        let d = if cl == lower {
            0
        } else {
            let d = edit_distance(&lower, &cl);
            let limit = 2.max(input.chars().count() / 3);
            if d <= limit {
                d
            } else if lower.len() >= 4 && (cl.contains(&lower) || lower.contains(&cl)) {
                limit + 1
            } else {
                continue;
            }
        };
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

// ---------------------------------------------------------------------------------------------
// Kubernetes object metadata

/// `metadata` as written in a Kubernetes object (policies and manifests). The fields an API
/// server fills in (`uid`, `resourceVersion`, `generation`, `creationTimestamp`,
/// `managedFields`, `selfLink`) are accepted and ignored, so `kubectl get -o yaml` output can
/// be pasted; any other field is an error.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "uid")]
    _uid: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "resourceVersion")]
    _resource_version: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "generation")]
    _generation: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "creationTimestamp")]
    _creation_timestamp: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "managedFields")]
    _managed_fields: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "selfLink")]
    _self_link: Option<serde::de::IgnoredAny>,
}

/// Which Kubernetes rule an object's name follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain: most objects (pods, deployments, policies).
    Subdomain,
    /// DNS-1123 label: namespaces.
    Label,
    /// DNS-1035 label (a DNS-1123 label starting with a letter): services.
    Dns1035,
}

/// Checks `meta`, written at path `at` of `doc` (usually `metadata`): `name` present and valid
/// under `rule`, `namespace` a DNS-1123 label and only for namespaced kinds, label keys and values
/// valid, annotation keys valid. `kind` names the object in messages.
pub fn check_metadata(
    doc: &Document,
    at: &str,
    meta: &ObjectMeta,
    rule: NameRule,
    namespaced: bool,
    kind: &str,
) -> Vec<Located> {
    let mut errors = Vec::new();
    let name_error = |path: &str, e: names::NameError, errors: &mut Vec<Located>| {
        let mut l = doc.value_error(path, e.message);
        l.hint = e.hint;
        errors.push(l);
    };
    match meta.name.as_deref() {
        None => errors.push(
            doc.error(at, format!("a {kind} needs `metadata.name`"))
                .with_hint(
                    "add `name: my-name` under `metadata:` (lowercase letters, digits and `-`)",
                ),
        ),
        Some(name) => {
            let r = match rule {
                NameRule::Subdomain => names::dns1123_subdomain(name, "name"),
                NameRule::Label => names::dns1123_label(name, "name"),
                NameRule::Dns1035 => names::dns1123_label(name, "name").and_then(|()| {
                    if name.starts_with(|c: char| c.is_ascii_digit()) {
                        Err(names::NameError {
                            message: format!("name `{name}` must start with a letter"),
                            hint: Some(format!("for example `s-{name}`")),
                        })
                    } else {
                        Ok(())
                    }
                }),
            };
            if let Err(e) = r {
                name_error(&join_key(at, "name"), e, &mut errors);
            }
        }
    }
    if let Some(ns) = meta.namespace.as_deref() {
        if !namespaced {
            errors.push(
                doc.error(
                    &join_key(at, "namespace"),
                    format!("a {kind} is not namespaced; it cannot have `metadata.namespace`"),
                )
                .with_hint("remove the `namespace` line"),
            );
        } else if let Err(e) = names::dns1123_label(ns, "namespace") {
            name_error(&join_key(at, "namespace"), e, &mut errors);
        }
    }
    for (key, value) in meta.labels.iter().flatten() {
        let path = join_key(&join_key(at, "labels"), key);
        if let Err(e) = crate::policy::selector::validate_k8s_label_key(key) {
            let mut l = doc.error(&path, e.message);
            l.hint = e.hint;
            errors.push(l);
        }
        if let Err(e) = crate::policy::selector::validate_label_value(value) {
            name_error(&path, e, &mut errors);
        }
    }
    for key in meta.annotations.iter().flatten().map(|(k, _)| k) {
        if let Err(e) = crate::policy::selector::validate_k8s_label_key(key) {
            let mut l = doc.error(
                &join_key(&join_key(at, "annotations"), key),
                e.message.replace("label key", "annotation key"),
            );
            l.hint = e.hint;
            errors.push(l);
        }
    }
    errors
}

// ---------------------------------------------------------------------------------------------
// Kubernetes names

/// Kubernetes name rules, each returning a message and, when it can, a hint with a valid
/// spelling.
pub mod names {
    /// A rule violation: the message and a hint (often a corrected spelling).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct NameError {
        pub message: String,
        pub hint: Option<String>,
    }

    fn fail(message: String, hint: Option<String>) -> Result<(), NameError> {
        Err(NameError { message, hint })
    }

    /// Lowercase, with runs of invalid characters replaced by `-` and trimmed: a valid
    /// spelling to suggest.
    fn sanitized(name: &str, allow_dot: bool) -> String {
        let mut out = String::new();
        for c in name.chars().flat_map(char::to_lowercase) {
            let ok = c.is_ascii_lowercase() || c.is_ascii_digit() || (allow_dot && c == '.');
            if ok {
                out.push(c);
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        out.trim_matches(['-', '.']).to_owned()
    }

    fn check_label_chars(name: &str, what: &str, allow_dot: bool) -> Result<(), NameError> {
        let fix = |n: &str| {
            let s = sanitized(n, allow_dot);
            (!s.is_empty()).then(|| format!("for example `{s}`"))
        };
        if let Some(c) = name.chars().find(|c| c.is_ascii_uppercase()) {
            return fail(
                format!(
                    "{what} `{name}` contains the uppercase letter `{c}`; only lowercase is allowed"
                ),
                fix(name),
            );
        }
        if let Some(c) = name.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || (allow_dot && *c == '.'))
        }) {
            let allowed = if allow_dot {
                "lowercase letters, digits, `-` and `.`"
            } else {
                "lowercase letters, digits and `-`"
            };
            return fail(
                format!("{what} `{name}` contains `{c}`; only {allowed} are allowed"),
                fix(name),
            );
        }
        let first = name.chars().next().unwrap_or('-');
        let last = name.chars().last().unwrap_or('-');
        if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
            return fail(
                format!("{what} `{name}` must start and end with a letter or digit"),
                fix(name),
            );
        }
        Ok(())
    }

    /// A DNS-1123 label (namespaces, container names, port names): at most 63 characters of
    /// lowercase letters, digits and `-`, starting and ending with a letter or digit.
    pub fn dns1123_label(name: &str, what: &str) -> Result<(), NameError> {
        if name.is_empty() {
            return fail(format!("{what} must not be empty"), None);
        }
        if name.len() > 63 {
            return fail(
                format!(
                    "{what} `{name}` is {} characters long; the limit is 63",
                    name.len()
                ),
                None,
            );
        }
        check_label_chars(name, what, false)
    }

    /// A DNS-1123 subdomain (object names): at most 253 characters; dot-separated labels of
    /// lowercase letters, digits and `-`.
    pub fn dns1123_subdomain(name: &str, what: &str) -> Result<(), NameError> {
        if name.is_empty() {
            return fail(format!("{what} must not be empty"), None);
        }
        if name.len() > 253 {
            return fail(
                format!("{what} is {} characters long; the limit is 253", name.len()),
                None,
            );
        }
        check_label_chars(name, what, true)?;
        if name.split('.').any(|part| {
            part.is_empty()
                || !part.starts_with(|c: char| c.is_ascii_alphanumeric())
                || !part.ends_with(|c: char| c.is_ascii_alphanumeric())
        }) {
            return fail(
                format!(
                    "{what} `{name}`: each dot-separated part must start and end with a letter or digit"
                ),
                None,
            );
        }
        Ok(())
    }

    /// An IANA service name, as Kubernetes and Cilium use for named ports: 1 to 15 characters
    /// of letters, digits and `-`, at least one letter, no `-` at either end and no `--`.
    /// Kubernetes requires lowercase (`lowercase_only`); Cilium folds case.
    pub fn port_name(name: &str, lowercase_only: bool) -> Result<(), NameError> {
        let what = "port name";
        // A valid spelling to suggest: lowercase, other characters as single `-`, 15 at most.
        let fixed = {
            let mut f = sanitized(name, false);
            f.truncate(15);
            let f = f.trim_end_matches('-').to_owned();
            (!f.is_empty() && f.chars().any(|c| c.is_ascii_alphabetic()) && f != name)
                .then(|| format!("for example `{f}`"))
        };
        if name.is_empty() || name.len() > 15 {
            return fail(
                format!("{what} `{name}` must be 1 to 15 characters long"),
                fixed,
            );
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return fail(
                format!("{what} `{name}` may contain only letters, digits and `-`"),
                fixed,
            );
        }
        if lowercase_only && name.chars().any(|c| c.is_ascii_uppercase()) {
            return fail(format!("{what} `{name}` must be lowercase"), fixed);
        }
        if !name.chars().any(|c| c.is_ascii_alphabetic()) {
            return fail(
                format!("{what} `{name}` must contain at least one letter"),
                None,
            );
        }
        if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
            return fail(
                format!("{what} `{name}` must not start or end with `-` or contain `--`"),
                fixed,
            );
        }
        Ok(())
    }

    /// Whether `s` is a valid IANA service name (letters allowed in either case).
    pub fn is_port_name(s: &str) -> bool {
        port_name(s, false).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> Vec<Document> {
        parse_documents(&Source::new("t.yaml", text)).unwrap()
    }

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
    fn scalars_follow_the_core_schema() {
        let d =
            &docs("a: 80\nb: \"80\"\nc: true\nd: ~\ne: 1.5\nf: 0x10\ng: !!str 80\nh: yes\ni: -3\n")
                [0];
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
        assert_eq!(d.locations.line_of("c.b"), Some((2, 1)));
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
    fn suggestions() {
        assert_eq!(
            suggest("fromEndpoint", ["fromEndpoints", "fromCIDR"]),
            Some("fromEndpoints")
        );
        assert_eq!(suggest("tcp", ["TCP", "UDP"]), Some("TCP"));
        assert_eq!(suggest("zzzzzz", ["TCP", "UDP"]), None);
        assert_eq!(
            suggest("endpoints", ["fromEndpoints", "toPorts"]),
            Some("fromEndpoints")
        );
    }

    #[test]
    fn names() {
        assert!(names::dns1123_subdomain("rule1.example", "name").is_ok());
        let e = names::dns1123_subdomain("Rule_1", "name").unwrap_err();
        assert_eq!(
            e.message,
            "name `Rule_1` contains the uppercase letter `R`; only lowercase is allowed"
        );
        assert_eq!(e.hint.as_deref(), Some("for example `rule-1`"));
        assert!(names::dns1123_label("a.b", "namespace").is_err());
        assert!(names::is_port_name("http-alt"));
        assert!(!names::is_port_name("8080"));
        assert!(!names::is_port_name("a--b"));
    }
}
