//! Label matching: does an [`EndpointSelector`] select an endpoint with these [`Labels`]?
//!
//! Labels carry a **source** before the first `:`: `k8s:org=empire` is the Kubernetes label
//! `org=empire`; `reserved:host` is one of Cilium's reserved labels. The rules, as in Cilium:
//!
//! - A selector key without a source (`org`), or with `any:` (`any:org`), matches a label of
//!   that name from any source (`k8s:org`, `container:org`, ...), **except** `reserved:` labels.
//! - A selector key with a source (`k8s:org`) matches only labels from that source.
//! - `reserved:` labels (`reserved:host`, `reserved:world`, ...) are matched only by selector keys
//!   written with `reserved:`. (Cilium lets `any:` reach them too; the lab does not, so that a
//!   label called `host` in a selector can never select the node by accident.)
//! - A label key without a source in [`Labels`] has the source `unspec`.
//!
//! Operators follow Kubernetes: `In` needs a matching label whose value is listed; `NotIn`
//! matches when no matching label has a listed value (so also when the label is absent);
//! `Exists` / `DoesNotExist` test for a matching label. An empty selector (`{}`) selects
//! everything.
//!
//! This file also holds the syntax rules for label keys and values, shared by the policy and
//! manifest parsers.

use std::{collections::BTreeMap, fmt};

use serde::Serialize;

use super::api::{EndpointSelector, LabelSelectorRequirement, Operator};
use crate::yaml::{names::NameError, suggest};

/// Label sources a selector key may name.
pub const SOURCES: &[&str] = &["any", "k8s", "reserved", "container", "unspec"];

/// Cilium's reserved labels (`reserved:NAME`).
pub const RESERVED_LABELS: &[&str] = &[
    "host",
    "remote-node",
    "kube-apiserver",
    "world",
    "world-ipv4",
    "world-ipv6",
    "health",
    "init",
    "ingress",
    "unmanaged",
    "unknown",
];

/// An endpoint's labels: key (with its source prefix, such as `k8s:org`) → value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Labels(pub BTreeMap<String, String>);

impl Labels {
    pub fn new() -> Self {
        Labels::default()
    }

    /// Kubernetes labels (`org: empire`) as `k8s:` labels (`k8s:org=empire`).
    pub fn from_k8s<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        Labels(
            labels
                .into_iter()
                .map(|(k, v)| (format!("k8s:{k}"), v.clone()))
                .collect(),
        )
    }

    /// Adds one label; `key` includes its source (`k8s:org`, `reserved:host`).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values of every label a selector key refers to, under the source rules above.
    pub fn values_for<'a>(&'a self, selector_key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let (want_source, want_name) = split_selector_key(selector_key);
        self.0.iter().filter_map(move |(key, value)| {
            let (source, name) = split_label_key(key);
            let source_ok = match want_source {
                None => source != "reserved",
                Some(s) => s == source,
            };
            (source_ok && name == want_name).then_some(value.as_str())
        })
    }
}

impl fmt::Display for Labels {
    /// `k8s:class=deathstar,k8s:org=empire` (a label with an empty value shows as its key).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if v.is_empty() {
                write!(f, "{k}")?;
            } else {
                write!(f, "{k}={v}")?;
            }
        }
        Ok(())
    }
}

/// A label key → (source, name); a key without a source has the source `unspec`.
pub fn split_label_key(key: &str) -> (&str, &str) {
    key.split_once(':').unwrap_or(("unspec", key))
}

/// A selector key → (source, name); `None` for "any source" (no prefix, or `any:`).
pub fn split_selector_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once(':') {
        Some(("any", name)) => (None, name),
        Some((source, name)) => (Some(source), name),
        None => (None, key),
    }
}

impl EndpointSelector {
    /// A selector that selects every endpoint (`{}`).
    pub fn all() -> Self {
        EndpointSelector {
            match_labels: None,
            match_expressions: None,
        }
    }

    /// A selector with these `matchLabels`.
    pub fn with_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let map = labels
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        EndpointSelector {
            match_labels: Some(map),
            match_expressions: None,
        }
    }

    /// Whether the selector has no requirement at all, and so selects everything.
    pub fn is_empty(&self) -> bool {
        self.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && self.match_expressions.as_ref().is_none_or(Vec::is_empty)
    }

    /// Whether an endpoint with `labels` is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        let labels_ok = self
            .match_labels
            .iter()
            .flatten()
            .all(|(key, value)| labels.values_for(key).any(|v| v == value));
        labels_ok
            && self
                .match_expressions
                .iter()
                .flatten()
                .all(|r| r.matches(labels))
    }
}

impl LabelSelectorRequirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let values = self.values.as_deref().unwrap_or_default();
        let mut found = labels.values_for(&self.key).peekable();
        match self.operator {
            Operator::In => found.any(|v| values.iter().any(|x| x == v)),
            Operator::NotIn => !found.any(|v| values.iter().any(|x| x == v)),
            Operator::Exists => found.peek().is_some(),
            Operator::DoesNotExist => found.peek().is_none(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Label syntax

fn fail<T>(message: String, hint: Option<String>) -> Result<T, NameError> {
    Err(NameError { message, hint })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// A Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit.
pub fn validate_k8s_label_key(key: &str) -> Result<(), NameError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        crate::yaml::names::dns1123_subdomain(p, "label key prefix").map_err(|e| NameError {
            message: format!("in label key `{key}`: {}", e.message),
            hint: e.hint,
        })?;
    }
    if name.is_empty() {
        return fail(format!("label key `{key}` has an empty name"), None);
    }
    if name.len() > 63 {
        return fail(
            format!("label key `{key}`: the name part is longer than 63 characters"),
            None,
        );
    }
    if let Some(c) = name.chars().find(|c| !is_name_char(*c)) {
        let hint = (c == ':').then(|| {
            format!(
                "a source prefix is written before the key: one of {}",
                quoted(SOURCES)
            )
        });
        return fail(
            format!(
                "label key `{key}` contains `{c}`; only letters, digits, `-`, `_` and `.` are allowed"
            ),
            hint,
        );
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return fail(
            format!("label key `{key}` must start and end with a letter or digit"),
            None,
        );
    }
    Ok(())
}

/// A selector key: a Kubernetes label key, optionally with a source prefix (`k8s:`, `any:`,
/// `reserved:`, `container:`, `unspec:`); `reserved:` keys must name a reserved label.
pub fn validate_selector_key(key: &str) -> Result<(), NameError> {
    let Some((source, name)) = key.split_once(':') else {
        return validate_k8s_label_key(key);
    };
    if !SOURCES.contains(&source) {
        let hint = match suggest(source, SOURCES.iter().copied()) {
            Some(s) => format!("did you mean `{s}:{name}`?"),
            None => format!("valid sources: {}", quoted(SOURCES)),
        };
        return fail(
            format!("label source `{source}` in key `{key}` is unknown"),
            Some(hint),
        );
    }
    if source == "reserved" && !RESERVED_LABELS.contains(&name) {
        let hint = match suggest(name, RESERVED_LABELS.iter().copied()) {
            Some(s) => format!("did you mean `reserved:{s}`?"),
            None => format!("reserved labels: {}", quoted(RESERVED_LABELS)),
        };
        return fail(
            format!("`{key}` is not one of Cilium's reserved labels"),
            Some(hint),
        );
    }
    validate_k8s_label_key(name)
}

/// A Kubernetes label value: empty, or at most 63 letters, digits, `-`, `_` and `.`, starting
/// and ending with a letter or digit.
pub fn validate_label_value(value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return fail(
            format!("label value `{value}` is longer than 63 characters"),
            None,
        );
    }
    if let Some(c) = value.chars().find(|c| !is_name_char(*c)) {
        return fail(
            format!(
                "label value `{value}` contains `{c}`; only letters, digits, `-`, `_` and `.` are allowed"
            ),
            None,
        );
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !value.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return fail(
            format!("label value `{value}` must start and end with a letter or digit"),
            None,
        );
    }
    Ok(())
}

fn quoted(list: &[&str]) -> String {
    list.iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel_labels(pairs: &[(&str, &str)]) -> EndpointSelector {
        EndpointSelector::with_labels(pairs.iter().copied())
    }

    fn expr(key: &str, operator: Operator, values: &[&str]) -> EndpointSelector {
        EndpointSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator,
                values: (!values.is_empty())
                    .then(|| values.iter().map(|s| s.to_string()).collect()),
            }]),
        }
    }

    fn tiefighter() -> Labels {
        Labels::new()
            .with("k8s:org", "empire")
            .with("k8s:class", "tiefighter")
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert!(EndpointSelector::all().matches(&tiefighter()));
        assert!(EndpointSelector::all().matches(&Labels::new()));
        assert!(EndpointSelector::all().matches(&Labels::new().with("reserved:host", "")));
        let empty_lists = EndpointSelector {
            match_labels: Some(BTreeMap::new()),
            match_expressions: Some(vec![]),
        };
        assert!(empty_lists.is_empty() && empty_lists.matches(&tiefighter()));
    }

    #[test]
    fn match_labels_are_anded() {
        assert!(sel_labels(&[("org", "empire")]).matches(&tiefighter()));
        assert!(sel_labels(&[("org", "empire"), ("class", "tiefighter")]).matches(&tiefighter()));
        assert!(!sel_labels(&[("org", "empire"), ("class", "deathstar")]).matches(&tiefighter()));
        assert!(!sel_labels(&[("org", "alliance")]).matches(&tiefighter()));
        assert!(!sel_labels(&[("team", "")]).matches(&tiefighter()));
    }

    #[test]
    fn source_rules() {
        let l = tiefighter();
        // No source and any: match any source.
        assert!(sel_labels(&[("org", "empire")]).matches(&l));
        assert!(sel_labels(&[("any:org", "empire")]).matches(&l));
        // An explicit source matches only that source.
        assert!(sel_labels(&[("k8s:org", "empire")]).matches(&l));
        assert!(!sel_labels(&[("container:org", "empire")]).matches(&l));
        let from_container = Labels::new().with("container:org", "empire");
        assert!(sel_labels(&[("org", "empire")]).matches(&from_container));
        assert!(!sel_labels(&[("k8s:org", "empire")]).matches(&from_container));
        // Unprefixed label keys have the source unspec.
        let unspec = Labels::new().with("org", "empire");
        assert!(sel_labels(&[("org", "empire")]).matches(&unspec));
        assert!(sel_labels(&[("unspec:org", "empire")]).matches(&unspec));
        assert!(!sel_labels(&[("k8s:org", "empire")]).matches(&unspec));
    }

    #[test]
    fn reserved_labels_need_reserved_keys() {
        let host = Labels::new().with("reserved:host", "");
        assert!(sel_labels(&[("reserved:host", "")]).matches(&host));
        assert!(!sel_labels(&[("host", "")]).matches(&host));
        assert!(!sel_labels(&[("any:host", "")]).matches(&host));
        assert!(!sel_labels(&[("k8s:host", "")]).matches(&host));
        assert!(!expr("host", Operator::Exists, &[]).matches(&host));
        assert!(expr("reserved:host", Operator::Exists, &[]).matches(&host));
        // A k8s label named like a reserved one is not reserved.
        let fake = Labels::new().with("k8s:host", "");
        assert!(!sel_labels(&[("reserved:host", "")]).matches(&fake));
    }

    #[test]
    fn operator_in() {
        let l = tiefighter();
        assert!(expr("class", Operator::In, &["xwing", "tiefighter"]).matches(&l));
        assert!(!expr("class", Operator::In, &["xwing"]).matches(&l));
        assert!(!expr("missing", Operator::In, &["x"]).matches(&l));
        assert!(expr("k8s:class", Operator::In, &["tiefighter"]).matches(&l));
        assert!(!expr("container:class", Operator::In, &["tiefighter"]).matches(&l));
    }

    #[test]
    fn operator_not_in() {
        let l = tiefighter();
        assert!(expr("class", Operator::NotIn, &["xwing"]).matches(&l));
        assert!(!expr("class", Operator::NotIn, &["xwing", "tiefighter"]).matches(&l));
        // An absent label is "not in" any set.
        assert!(expr("missing", Operator::NotIn, &["x"]).matches(&l));
    }

    #[test]
    fn operator_exists_and_does_not_exist() {
        let l = tiefighter();
        assert!(expr("org", Operator::Exists, &[]).matches(&l));
        assert!(!expr("status", Operator::Exists, &[]).matches(&l));
        assert!(expr("status", Operator::DoesNotExist, &[]).matches(&l));
        assert!(!expr("org", Operator::DoesNotExist, &[]).matches(&l));
        assert!(expr("container:org", Operator::DoesNotExist, &[]).matches(&l));
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        let mut s = sel_labels(&[("org", "empire")]);
        s.match_expressions = expr("class", Operator::NotIn, &["tiefighter"]).match_expressions;
        assert!(!s.matches(&tiefighter()));
        assert!(
            s.matches(
                &Labels::new()
                    .with("k8s:org", "empire")
                    .with("k8s:class", "deathstar")
            )
        );
    }

    #[test]
    fn display_and_from_k8s() {
        let k8s: BTreeMap<String, String> = [("org".into(), "empire".into())].into();
        let l = Labels::from_k8s(&k8s).with("reserved:host", "");
        assert_eq!(l.to_string(), "k8s:org=empire,reserved:host");
    }

    #[test]
    fn key_and_value_syntax() {
        assert!(validate_selector_key("org").is_ok());
        assert!(validate_selector_key("k8s:io.kubernetes.pod.namespace").is_ok());
        assert!(validate_selector_key("app.kubernetes.io/name").is_ok());
        assert!(validate_selector_key("reserved:host").is_ok());
        assert_eq!(
            validate_selector_key("reserved:hots")
                .unwrap_err()
                .hint
                .as_deref(),
            Some("did you mean `reserved:host`?")
        );
        assert_eq!(
            validate_selector_key("k8z:org")
                .unwrap_err()
                .hint
                .as_deref(),
            Some("did you mean `k8s:org`?")
        );
        assert!(validate_selector_key("-org").is_err());
        assert!(validate_selector_key("Org_1").is_ok());
        assert!(validate_k8s_label_key("k8s:org").is_err());
        assert!(validate_k8s_label_key("Example.com/org").is_err());
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("v1.2_x-y").is_ok());
        assert!(validate_label_value("needs space").is_err());
        assert!(validate_label_value("-x").is_err());
    }
}
