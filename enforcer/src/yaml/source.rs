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

    /// Reads a file, or standard input when `path` is `-`. Errors name the file; a file larger
    /// than [`MAX_SOURCE_BYTES`] is refused before it is read, and so is one that is not UTF-8.
    pub fn read(path: &str) -> std::io::Result<Self> {
        use std::io::{Error, ErrorKind, Read};
        let named = |e: Error| Error::new(e.kind(), format!("{path}: {e}"));
        let too_large = || {
            Error::new(
                ErrorKind::InvalidData,
                format!(
                    "{path}: the file is larger than {MAX_SOURCE_BYTES} bytes ({} MiB), the most the lab reads",
                    MAX_SOURCE_BYTES >> 20
                ),
            )
        };
        let mut bytes = Vec::new();
        let limit = MAX_SOURCE_BYTES as u64 + 1;
        if path == "-" {
            std::io::stdin()
                .take(limit)
                .read_to_end(&mut bytes)
                .map_err(named)?;
        } else {
            let file = std::fs::File::open(path).map_err(named)?;
            if file.metadata().map_err(named)?.len() >= limit {
                return Err(too_large());
            }
            file.take(limit).read_to_end(&mut bytes).map_err(named)?;
        }
        if bytes.len() as u64 >= limit {
            return Err(too_large());
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::new(
                ErrorKind::InvalidData,
                format!(
                    "{path}: not UTF-8 text (invalid byte at offset {}); save it as UTF-8",
                    e.utf8_error().valid_up_to()
                ),
            )
        })?;
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

/// One error at a place in a file, and what kind of problem it reports: plain data the control
/// API passes on as it is.
pub use model::{ErrorKind, Located, MAX_SOURCE_BYTES};

/// Sorts errors by position (stable, so errors at one place keep their order) and drops
/// exact duplicates.
pub fn sort_errors(errors: &mut Vec<Located>) {
    errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    errors.dedup();
}
