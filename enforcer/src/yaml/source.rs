//! Where text comes from and how its errors are reported: [`Source`] (a file's name and text),
//! [`SourceRef`] (an object's file, document and line) and [`Located`] (one error at a line and
//! column, printed `FILE:LINE:COL: FIELD: MESSAGE` with an optional hint).

use std::fmt;

use serde::Serialize;

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
