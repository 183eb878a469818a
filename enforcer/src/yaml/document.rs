//! One parsed document: its value, where each field is written, and errors that point at its
//! fields.

use serde_json::Value;

use super::{Located, Locations, SourceRef, value_at};

/// One non-empty YAML document of a [`Source`](super::Source).
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
}
