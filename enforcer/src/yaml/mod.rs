//! Located YAML documents: what users write, with every field's line and column, and errors
//! that name the file, line and field and say what would be valid.
//!
//! The pieces, in the order a file goes through them (one file each):
//!
//! - `source`: [`Source`], a file's name and text (a path, `-` for stdin, or `<web editor>`);
//!   [`Located`], one error, printed as `FILE:LINE:COL: FIELD: MESSAGE` plus an optional
//!   `  hint: ...` line, serializable for the web editor; [`SourceRef`], where an object came from.
//! - `load` (with `scalar`): [`parse_documents`], saphyr-parser's event stream → one
//!   [`Document`] per non-empty YAML document (`---`), each holding a `serde_json::Value` and the
//!   [`Locations`] of its fields (`locations`), built in the same pass so the two always agree.
//!   JSON is YAML, so JSON files work too. A Kubernetes `kind: List` with `items:` is flattened
//!   into one document per item.
//! - `decode` (with `hints` and `suggest`): [`Document::decode`], the value (or a sub-path) → a
//!   typed struct, with serde errors turned into [`Located`] errors at the right line, "did you
//!   mean" hints for misspelt fields and values ([`suggest`]), and error recovery so one pass
//!   reports every unknown field, not just the first.
//! - `check`: [`Checker`], the errors of one document while its semantic rules are checked.
//! - `meta`: Kubernetes object metadata ([`ObjectMeta`], [`check_metadata`]); [`names`]:
//!   Kubernetes name rules (DNS-1123 labels and subdomains, IANA port names).
//!
//! Field paths (`paths`) are written `spec.ingress[0].toPorts[0].ports[0].port`: keys joined by
//! `.`, list indexes in brackets, the root is `""`. A key that contains `.`, `[`, `]`, `"` or `\`,
//! or is empty, is written in brackets as a JSON string: `matchLabels["app.kubernetes.io/name"]`.
//!
//! Plain scalars are resolved with the YAML 1.2 core schema (as serde_yaml_ng does): `true`,
//! `null`, `~`, `80`, `0x1F`, `1.5`; quoted scalars are strings. Mapping keys are always strings.
//! Duplicate keys are errors. Anchors and aliases work; merge keys (`<<`) do not.

mod check;
mod decode;
mod document;
mod hints;
mod load;
mod locations;
mod meta;
pub mod names;
mod paths;
mod scalar;
mod source;
mod suggest;

pub use check::{Checker, NamesInFile};
pub use decode::{Decoded, Placeholders, suggested_fields};
pub use document::Document;
pub use hints::UNSUPPORTED_MARK;
pub use load::{MAX_ALIAS_VALUES, MAX_DEPTH, MAX_VALUES, parse_documents};
pub use locations::Locations;
pub use meta::{NameRule, ObjectMeta, check_metadata};
pub use paths::{
    Segment, join_index, join_key, parent_path, path_from_segments, path_segments, value_at,
};
pub use source::{ErrorKind, Located, MAX_SOURCE_BYTES, Source, SourceRef, sort_errors};
pub use suggest::suggest;
