//! Where each field of a document is written: field path → line and column, recorded while
//! loading and asked by every error that points into the document.

use std::collections::BTreeMap;

use super::paths::{path_from_segments, path_segments};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Place {
    /// Where the key is, for mapping entries.
    key: Option<(usize, usize)>,
    /// Where the value starts.
    value: (usize, usize),
    /// A plain scalar that YAML 1.1 reads as a boolean (`yes`, `on`, `n`, ...): a string here
    /// (YAML 1.2), but `kubectl` sends a boolean.
    yaml11_bool: bool,
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

    pub(super) fn set_key(&mut self, path: String, key: (usize, usize)) {
        self.places.insert(
            path,
            Place {
                key: Some(key),
                value: key,
                yaml11_bool: false,
            },
        );
    }

    pub(super) fn set_value(&mut self, path: &str, value: (usize, usize)) {
        match self.places.get_mut(path) {
            Some(p) => p.value = value,
            None => {
                self.places.insert(
                    path.to_owned(),
                    Place {
                        key: None,
                        value,
                        yaml11_bool: false,
                    },
                );
            }
        }
    }

    /// The locations under `prefix`, re-rooted at `prefix` (used to flatten `kind: List`).
    /// Marks the value at `path` as a plain scalar YAML 1.1 reads as a boolean.
    pub(super) fn mark_yaml11_bool(&mut self, path: &str) {
        if let Some(p) = self.places.get_mut(path) {
            p.yaml11_bool = true;
        }
    }

    /// The paths of plain scalars that are strings here (YAML 1.2) but booleans for `kubectl`,
    /// which reads YAML 1.1: `y`, `yes`, `on`, `n`, `no`, `off` in any of their spellings.
    pub fn yaml11_booleans(&self) -> impl Iterator<Item = &str> {
        self.places
            .iter()
            .filter(|(_, p)| p.yaml11_bool)
            .map(|(path, _)| path.as_str())
    }

    pub(super) fn subtree(&self, prefix: &str) -> Locations {
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
