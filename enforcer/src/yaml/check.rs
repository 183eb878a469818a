//! Checking decoded documents beyond what their types say (Cilium's and Kubernetes' semantic
//! rules): one list of located errors per document, and the fields "did you mean" hints already
//! point to, so that a misspelt field is not also reported missing; and, across the documents of
//! one file, objects defined twice.

use std::collections::{HashMap, HashSet};

use super::{
    Decoded, Document, Located, NameRule, ObjectMeta, Placeholders, check_metadata, join_key,
    suggested_fields,
};

/// The errors of one document, decoding's first, and the checks that add to them.
pub struct Checker<'d> {
    pub doc: &'d Document,
    pub errors: Vec<Located>,
    /// The fields "did you mean" hints in the decoding errors point to (see
    /// [`suggested_fields`]).
    pub suggested: HashSet<String>,
    /// Where decoding put placeholders ([`Document::decode_all`]): the checks' errors there are
    /// about the placeholders and are left out by [`Checker::into_errors`].
    placeholders: Placeholders,
    /// How many of `errors` decoding reported (they are always kept).
    decoded: usize,
}

impl<'d> Checker<'d> {
    /// Starts from the errors decoding the document reported.
    pub fn new(doc: &'d Document, decode_errors: Vec<Located>) -> Self {
        Checker {
            doc,
            suggested: suggested_fields(&decode_errors),
            decoded: decode_errors.len(),
            errors: decode_errors,
            placeholders: Placeholders::default(),
        }
    }

    /// Starts from what [`Document::decode_all`] reported, placeholders included.
    pub fn from_decoded<T>(doc: &'d Document, decoded: &mut Decoded<T>) -> Self {
        let mut check = Checker::new(doc, std::mem::take(&mut decoded.errors));
        check.placeholders = std::mem::take(&mut decoded.placeholders);
        check
    }

    /// Every error: decoding's, and the checks' that are not about a placeholder.
    pub fn into_errors(self) -> Vec<Located> {
        let (decoded, placeholders) = (self.decoded, self.placeholders);
        self.errors
            .into_iter()
            .enumerate()
            .filter(|(i, e)| *i < decoded || !placeholders.covers(&e.field))
            .map(|(_, e)| e)
            .collect()
    }

    /// An error at the field's key.
    pub fn invalid(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        let mut e = self.doc.error(path, message);
        e.hint = hint;
        self.errors.push(e);
    }

    /// An error at the field's value.
    pub fn invalid_value(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        let mut e = self.doc.value_error(path, message);
        e.hint = hint;
        self.errors.push(e);
    }

    /// A required field is missing, reported at its parent (unless a misspelling of it was
    /// already reported).
    pub fn missing(&mut self, parent: &str, field: &str, message: impl Into<String>, hint: &str) {
        if !self.suggested.contains(&join_key(parent, field)) {
            self.invalid(parent, message, Some(hint.to_owned()));
        }
    }

    /// Checks the object's `metadata` with [`check_metadata`]; a missing `name` is not reported
    /// when a misspelling of it already was.
    pub fn metadata(&mut self, meta: &ObjectMeta, rule: NameRule, namespaced: bool, kind: &str) {
        let mut errors = check_metadata(self.doc, "metadata", meta, rule, namespaced, kind);
        if self.suggested.contains("metadata.name") {
            errors.retain(|e| e.field != "metadata");
        }
        self.errors.extend(errors);
    }
}

/// The objects of one file by kind, namespace and name, to find one defined twice.
#[derive(Debug, Default)]
pub struct NamesInFile {
    first_line: HashMap<(String, Option<String>, String), usize>,
}

impl NamesInFile {
    /// Remembers the object `doc` defines. If the file already defined one of the same kind,
    /// namespace and name, an error at `metadata.name` (`shown` is the name as the message
    /// gives it).
    pub fn defined_twice(
        &mut self,
        doc: &Document,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        shown: &str,
    ) -> Option<Located> {
        let key = (
            kind.to_owned(),
            namespace.map(str::to_owned),
            name.to_owned(),
        );
        let first = self.first_line.insert(key, doc.start_line)?;
        Some(doc.value_error(
            "metadata.name",
            format!("{kind} `{shown}` is defined twice in this file (first at line {first})"),
        ))
    }
}
