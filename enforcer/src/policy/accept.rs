//! The one decision whether the lab accepts a policy document. `lab policy apply`, `lab audit`
//! (offline and live), restoring saved policies and the corpus test all go through it, so they
//! accept exactly the same documents and report the same errors.
//!
//! A document is accepted when it is valid Cilium (a policy, or a `CiliumCIDRGroup`; or a valid
//! `ConnectionLimit`, the lab's own kind) by [`api`](super::api)'s checks, and the lab can
//! enforce it: [`normalize`] on the policy alone, which refuses what only enforcement finds.
//! Every error of a document is reported in one pass, those of both stages. A policy naming a
//! CIDR group is accepted whether or not the group exists (as in Cilium, the group is looked up
//! when the set is resolved).

use serde_json::Value;

use super::{
    api::{PolicyDoc, PolicyKind, check_policy_document},
    cidrgroup::{self, CidrGroupDoc},
    limits::{self, LimitDoc},
    normalize::normalize,
};
use crate::yaml::{self, Document, Located, NamesInFile, Source, parse_documents};

/// An accepted document.
#[derive(Clone, Debug)]
pub enum Accepted {
    Policy(PolicyDoc),
    Limit(LimitDoc),
    CidrGroup(CidrGroupDoc),
}

/// Whether a document is of a kind this module decides (a Cilium policy, a `CiliumCIDRGroup`
/// or a `ConnectionLimit`); other kinds are the topology's (see the lab's manifests).
pub fn is_policy_kind(doc: &Document) -> bool {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    PolicyKind::from_kind(kind).is_some() || limits::is_limit(doc) || cidrgroup::is_cidr_group(doc)
}

/// Every object a source holds, by kind.
#[derive(Clone, Debug, Default)]
pub struct AcceptedObjects {
    pub policies: Vec<PolicyDoc>,
    pub limits: Vec<LimitDoc>,
    pub groups: Vec<CidrGroupDoc>,
}

impl AcceptedObjects {
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty() && self.limits.is_empty() && self.groups.is_empty()
    }

    fn push(&mut self, a: Accepted) {
        match a {
            Accepted::Policy(p) => self.policies.push(p),
            Accepted::Limit(l) => self.limits.push(l),
            Accepted::CidrGroup(g) => self.groups.push(g),
        }
    }
}

/// One document: decoded, validated and checked to be enforceable, every error in one pass.
pub fn accept_document(doc: &Document) -> Result<Accepted, Vec<Located>> {
    if limits::is_limit(doc) {
        return limits::parse_limit_document(doc).map(Accepted::Limit);
    }
    if cidrgroup::is_cidr_group(doc) {
        return cidrgroup::parse_cidr_group_document(doc).map(Accepted::CidrGroup);
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
            Accepted::CidrGroup(g) => self
                .names
                .defined_twice(doc, cidrgroup::KIND, None, &g.name, &g.name)
                .map(|e| {
                    e.with_hint("give each group its own name, or merge their `externalCIDRs`")
                }),
        };
        match twice {
            Some(e) => Err(vec![e]),
            None => Ok(accepted),
        }
    }
}

/// Every policy, group and limit of a source, or every error in it (sorted by line). Documents
/// of other kinds are errors.
pub fn accept_source(src: &Source) -> Result<AcceptedObjects, Vec<Located>> {
    let documents = parse_documents(src).map_err(|e| vec![e])?;
    let mut file = FileAcceptor::default();
    let (mut objects, mut errors) = (AcceptedObjects::default(), Vec::new());
    for doc in &documents {
        match file.accept(doc) {
            Ok(a) => objects.push(a),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        yaml::sort_errors(&mut errors);
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(text: &str) -> Result<AcceptedObjects, Vec<Located>> {
        accept_source(&Source::new("a.yaml", text))
    }

    const HEAD: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\nspec:\n  endpointSelector: {}\n";

    #[test]
    fn every_error_in_one_pass_and_l7_rules_on_a_port_range_are_accepted() {
        let range = format!(
            "{HEAD}  ingress:\n  - toPorts: [{{ports: [{{port: \"80\", endPort: 90, protocol: TCP}}], rules: {{http: [{{method: GET}}]}}}}]\n"
        );
        accept(&range).unwrap();
        let text = format!(
            "{HEAD}  ingress:\n  - toPorts: [{{ports: [{{port: \"80\", endPort: 70, protocol: TCP}}]}}]\n  - fromEndpoints: [{{matchLabels: {{app: \"-bad\"}}}}]\n"
        );
        let e = accept(&text).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].message.contains("lower than `port`"), "{}", e[0]);
        assert!(e[1].message.contains("label value"), "{}", e[1]);
    }

    #[test]
    fn cidr_groups_and_policies_naming_them() {
        let group = "apiVersion: cilium.io/v2\nkind: CiliumCIDRGroup\nmetadata:\n  name: ext\n  labels: {role: ext}\nspec:\n  externalCIDRs: [198.51.100.0/24]\n";
        let by_ref = format!(
            "{HEAD}  egressDeny:\n  - toCIDRSet:\n    - cidrGroupRef: ext\n      except: [198.51.100.66/32]\n"
        );
        let by_label = format!(
            "{HEAD}  egress:\n  - toCIDRSet:\n    - cidrGroupSelector: {{matchLabels: {{role: ext}}}}\n"
        );
        let o = accept(&format!("{group}---\n{by_ref}")).unwrap();
        assert_eq!((o.policies.len(), o.groups.len()), (1, 1));
        // A policy may name a group that does not exist (yet).
        assert_eq!(accept(&by_label).unwrap().policies.len(), 1);
        let e = accept(&format!("{group}---\n{group}")).unwrap_err();
        assert!(e[0].message.contains("defined twice"), "{}", e[0]);
        // Exactly one of cidr, cidrGroupRef and cidrGroupSelector.
        let both = format!(
            "{HEAD}  egress:\n  - toCIDRSet:\n    - cidr: 10.0.0.0/8\n      cidrGroupRef: ext\n"
        );
        let e = accept(&both).unwrap_err();
        assert_eq!(
            e[0].field, "spec.egress[0].toCIDRSet[0].cidrGroupRef",
            "{e:?}"
        );
        assert!(
            e[0].message.contains("cannot be used in the same entry"),
            "{}",
            e[0]
        );
        let bad = format!(
            "{HEAD}  egress:\n  - toCIDRSet:\n    - cidrGroupRef: Not_A_Name\n      except: [10.0.0.1]\n    - except: [10.0.0.0/8]\n"
        );
        let e = accept(&bad).unwrap_err();
        let text: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(e.len(), 3, "{text:#?}");
        assert!(
            text[0].starts_with("a.yaml:9:") && text[0].contains("cidrGroupRef"),
            "{text:#?}"
        );
        assert!(
            text[1].starts_with("a.yaml:10:") && text[1].contains("prefix length"),
            "{text:#?}"
        );
        assert!(
            text[2].starts_with("a.yaml:11:") && text[2].contains("missing required field `cidr`"),
            "{text:#?}"
        );
    }

    #[test]
    fn limits_and_policies_and_duplicates() {
        let limit = "apiVersion: lab.dev/v1\nkind: ConnectionLimit\nmetadata:\n  name: l\nspec:\n  endpointSelector: {}\n  port: 80\n  maxConnections: 3\n";
        let policy = format!("{HEAD}  ingress:\n  - {{}}\n");
        let o = accept(&format!("{policy}---\n{limit}")).unwrap();
        assert_eq!((o.policies.len(), o.limits.len()), (1, 1));
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
