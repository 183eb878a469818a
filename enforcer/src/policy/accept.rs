//! The one decision whether the lab accepts a policy document. `lab policy apply`, `lab audit`
//! (offline and live), restoring saved policies and the corpus test all go through it, so they
//! accept exactly the same documents and report the same errors.
//!
//! A document is accepted when it is valid Cilium (or a valid `ConnectionLimit`, the lab's own
//! kind) by [`api`](super::api)'s checks, and the lab can enforce it: [`normalize`] on the policy
//! alone, which refuses what only enforcement finds (IPv6 prefixes, L7 rules on port ranges).
//! Every error of a document is reported in one pass, those of both stages.

use serde_json::Value;

use super::{
    api::{PolicyDoc, PolicyKind, check_policy_document},
    limits::{self, LimitDoc},
    normalize::normalize,
};
use crate::yaml::{self, Document, Located, NamesInFile, Source, parse_documents};

/// An accepted document.
#[derive(Clone, Debug)]
pub enum Accepted {
    Policy(PolicyDoc),
    Limit(LimitDoc),
}

/// Whether a document is of a kind this module decides (a Cilium policy or a
/// `ConnectionLimit`); other kinds are the topology's (see the lab's manifests).
pub fn is_policy_kind(doc: &Document) -> bool {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    PolicyKind::from_kind(kind).is_some() || limits::is_limit(doc)
}

/// One document: decoded, validated and checked to be enforceable, every error in one pass.
pub fn accept_document(doc: &Document) -> Result<Accepted, Vec<Located>> {
    if limits::is_limit(doc) {
        return limits::parse_limit_document(doc).map(Accepted::Limit);
    }
    let (policy, mut errors) = check_policy_document(doc);
    if let Some(p) = &policy
        && let Err(more) = normalize(std::slice::from_ref(p))
    {
        // Only what validation did not already say about the same field.
        let more: Vec<Located> = more
            .into_iter()
            .filter(|m| !errors.iter().any(|e| e.field == m.field))
            .collect();
        errors.extend(more);
    }
    match policy {
        Some(p) if errors.is_empty() => Ok(Accepted::Policy(p)),
        _ => {
            yaml::sort_errors(&mut errors);
            Err(errors)
        }
    }
}

/// The documents of one file, one after the other: [`accept_document`], and an object defined
/// twice in the file is an error (the second would silently replace the first).
#[derive(Debug, Default)]
pub struct FileAcceptor {
    names: NamesInFile,
}

impl FileAcceptor {
    /// Accepts one document of the file; `names` may be shared with the file's other objects.
    pub fn accept(&mut self, doc: &Document) -> Result<Accepted, Vec<Located>> {
        let accepted = accept_document(doc)?;
        let twice = match &accepted {
            Accepted::Policy(p) => self
                .names
                .defined_twice(
                    doc,
                    p.kind.as_str(),
                    p.namespace.as_deref(),
                    &p.name,
                    &p.qualified_name(),
                )
                .map(|e| {
                    e.with_hint("give each policy its own name, or merge their rules with `specs:`")
                }),
            Accepted::Limit(l) => self
                .names
                .defined_twice(doc, limits::KIND, Some(&l.namespace), &l.name, &l.name)
                .map(|e| e.with_hint("give each limit its own name")),
        };
        match twice {
            Some(e) => Err(vec![e]),
            None => Ok(accepted),
        }
    }
}

/// Every policy and limit of a source, or every error in it (sorted by line). Documents of other
/// kinds are errors.
pub fn accept_source(src: &Source) -> Result<(Vec<PolicyDoc>, Vec<LimitDoc>), Vec<Located>> {
    let documents = parse_documents(src).map_err(|e| vec![e])?;
    let mut file = FileAcceptor::default();
    let (mut policies, mut limit_docs, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for doc in &documents {
        match file.accept(doc) {
            Ok(Accepted::Policy(p)) => policies.push(p),
            Ok(Accepted::Limit(l)) => limit_docs.push(l),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok((policies, limit_docs))
    } else {
        yaml::sort_errors(&mut errors);
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(text: &str) -> Result<(Vec<PolicyDoc>, Vec<LimitDoc>), Vec<Located>> {
        accept_source(&Source::new("a.yaml", text))
    }

    const HEAD: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\nspec:\n  endpointSelector: {}\n";

    #[test]
    fn validation_and_enforcement_errors_in_one_pass() {
        // A validation error and one only enforcement finds (L7 rules on a port range), both
        // reported.
        let text = format!(
            "{HEAD}  ingress:\n  - toPorts: [{{ports: [{{port: \"80\", endPort: 90, protocol: TCP}}], rules: {{http: [{{method: GET}}]}}}}]\n  - fromEndpoints: [{{matchLabels: {{app: \"-bad\"}}}}]\n"
        );
        let e = accept(&text).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].message.contains("L7 rules need a single port"),
            "{}",
            e[0]
        );
        assert!(e[1].message.contains("label value"), "{}", e[1]);
    }

    #[test]
    fn limits_and_policies_and_duplicates() {
        let limit = "apiVersion: lab.dev/v1\nkind: ConnectionLimit\nmetadata:\n  name: l\nspec:\n  endpointSelector: {}\n  port: 80\n  maxConnections: 3\n";
        let policy = format!("{HEAD}  ingress:\n  - {{}}\n");
        let (p, l) = accept(&format!("{policy}---\n{limit}")).unwrap();
        assert_eq!((p.len(), l.len()), (1, 1));
        let e = accept(&format!("{policy}---\n{policy}")).unwrap_err();
        assert!(e[0].message.contains("defined twice"), "{}", e[0]);
        let e = accept("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n").unwrap_err();
        assert!(
            e[0].message.contains("not a network policy kind"),
            "{}",
            e[0]
        );
    }
}
