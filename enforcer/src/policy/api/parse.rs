//! From documents to policies: the kind and apiVersion recognised, the document decoded into
//! the types, its metadata and rules checked (`validate`),
//! and policies defined twice in one file reported.

use serde::{Deserialize, Serialize, de::IgnoredAny};
use serde_json::Value;

use super::{API_VERSION, AUDIT_ANNOTATION, PolicyDoc, PolicyKind, PortProtocol, Rule, validate};
use crate::yaml::{
    self, Checker, Document, ErrorKind, Located, NameRule, NamesInFile, ObjectMeta, Source,
    join_index, join_key, parse_documents, suggest,
};

/// A policy document as written; `apiVersion` and `kind` are checked before decoding.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyObject {
    #[serde(rename = "apiVersion")]
    _api_version: Option<IgnoredAny>,
    #[serde(rename = "kind")]
    _kind: Option<IgnoredAny>,
    metadata: Option<ObjectMeta>,
    spec: Option<Rule>,
    specs: Option<Vec<Rule>>,
    /// Written by the API server; accepted and ignored.
    #[serde(rename = "status")]
    _status: Option<IgnoredAny>,
}

/// Every policy of a source, or every error in it (syntax errors stop at the first).
///
/// Each document must be `apiVersion: cilium.io/v2` with kind `CiliumNetworkPolicy` or
/// `CiliumClusterwideNetworkPolicy`. Errors are sorted by line. A source without documents gives
/// an empty list.
pub fn parse_policies(src: &Source) -> Result<Vec<PolicyDoc>, Vec<Located>> {
    let check = check_policies(src);
    if check.errors.is_empty() {
        Ok(check.policies)
    } else {
        Err(check.errors)
    }
}

/// The result of [`check_policies`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct PolicyCheck {
    /// The documents that are valid Cilium policies; they may still use features the lab does
    /// not support (listed in `errors` with kind `unsupported`).
    pub policies: Vec<PolicyDoc>,
    /// Every problem found, sorted by line.
    pub errors: Vec<Located>,
}

/// Parses and validates every document, keeping the valid ones alongside all errors.
pub fn check_policies(src: &Source) -> PolicyCheck {
    let docs = match parse_documents(src) {
        Ok(d) => d,
        Err(e) => {
            return PolicyCheck {
                policies: vec![],
                errors: vec![e],
            };
        }
    };
    let mut out = PolicyCheck::default();
    let mut names = NamesInFile::default();
    for doc in &docs {
        let (policy, mut errors) = check_policy_document(doc);
        if let Some(p) = &policy
            && let Some(e) = names.defined_twice(
                doc,
                p.kind.as_str(),
                p.namespace.as_deref(),
                &p.name,
                &p.qualified_name(),
            )
        {
            errors.push(
                e.with_hint("give each policy its own name, or merge their rules with `specs:`"),
            );
        }
        let valid = errors.iter().all(|e| e.kind == ErrorKind::Unsupported);
        out.errors.extend(errors);
        if let (Some(p), true) = (policy, valid) {
            out.policies.push(p);
        }
    }
    yaml::sort_errors(&mut out.errors);
    out
}

/// One document → a policy, or its errors.
pub fn parse_policy_document(doc: &Document) -> Result<PolicyDoc, Vec<Located>> {
    match check_policy_document(doc) {
        (Some(p), e) if e.is_empty() => Ok(p),
        (_, mut e) => {
            yaml::sort_errors(&mut e);
            Err(e)
        }
    }
}

const ACCEPTED: &str = "accepted here: `CiliumNetworkPolicy` and `CiliumClusterwideNetworkPolicy` with `apiVersion: cilium.io/v2`, and Kubernetes `NetworkPolicy` with `apiVersion: networking.k8s.io/v1`";

/// Recognises the kind and apiVersion; errors if the document is not a Cilium policy (a wrong
/// kind and a wrong apiVersion are both reported).
fn check_kind(doc: &Document) -> Result<PolicyKind, Vec<Located>> {
    if !doc.value.is_object() {
        return Err(vec![doc.error(
            "",
            "a policy document must be a mapping with `apiVersion`, `kind`, `metadata` and `spec`",
        )]);
    }
    let kind = match doc.get("kind") {
        None => Err(doc
            .error("", "missing required field `kind`")
            .with_hint(ACCEPTED)),
        Some(Value::String(k)) => match PolicyKind::from_kind(k) {
            Some(kind) => Ok(kind),
            None => {
                let known = [
                    "CiliumNetworkPolicy",
                    "CiliumClusterwideNetworkPolicy",
                    "NetworkPolicy",
                ];
                let hint = match suggest(k, known) {
                    Some(s) if s != k => format!("did you mean `{s}`?"),
                    _ => ACCEPTED.to_owned(),
                };
                Err(doc
                    .value_error("kind", format!("`{k}` is not a network policy kind"))
                    .with_hint(hint))
            }
        },
        Some(_) => Err(doc
            .value_error("kind", "`kind` must be a string")
            .with_hint(ACCEPTED)),
    };
    // A document of another kind altogether (a Pod) is not a policy with a wrong apiVersion.
    let other_kind = doc.get("kind").and_then(Value::as_str).is_some_and(|k| {
        PolicyKind::from_kind(k).is_none()
            && suggest(
                k,
                [
                    "CiliumNetworkPolicy",
                    "CiliumClusterwideNetworkPolicy",
                    "NetworkPolicy",
                ],
            )
            .is_none()
    });
    if other_kind && let Err(e) = kind {
        return Err(vec![e]);
    }
    let for_kind = kind
        .as_ref()
        .map_or("a Cilium policy".to_owned(), ToString::to_string);
    let api_version = kind.as_ref().map_or(API_VERSION, |k| k.api_version());
    let api = match doc.get("apiVersion") {
        Some(Value::String(v)) if v == api_version => Ok(()),
        Some(Value::String(v)) => Err(doc
            .value_error(
                "apiVersion",
                format!("apiVersion `{v}` is not accepted for {for_kind}"),
            )
            .with_hint(format!("write `apiVersion: {api_version}`"))),
        Some(_) => Err(doc
            .value_error("apiVersion", "`apiVersion` must be a string")
            .with_hint(format!("write `apiVersion: {api_version}`"))),
        None => Err(doc
            .error("", "missing required field `apiVersion`")
            .with_hint(format!("write `apiVersion: {api_version}`"))),
    };
    match (kind, api) {
        (Ok(kind), Ok(())) => Ok(kind),
        (kind, api) => Err(kind.err().into_iter().chain(api.err()).collect()),
    }
}

/// Decodes and validates one document. Returns the policy when it could be built (even if it has
/// errors, so that later stages can add theirs) and every error.
pub fn check_policy_document(doc: &Document) -> (Option<PolicyDoc>, Vec<Located>) {
    let kind = match check_kind(doc) {
        Ok(PolicyKind::Kubernetes) => return super::netpol::check_document(doc),
        Ok(k) => k,
        Err(e) => return (None, e),
    };
    let mut decoded = doc.decode_all::<PolicyObject>("");
    // Decoding errors mean fields were dropped, repaired or given placeholders: the rest is
    // still checked, but the policy is not returned, since it no longer says what was written.
    let repaired = !decoded.errors.is_empty();
    let mut check = Checker::from_decoded(doc, &mut decoded);
    let Some(obj) = decoded.value else {
        return (None, check.into_errors());
    };
    if !decoded.paths_exact {
        // List items were dropped, so further checks would point at the wrong lines.
        return (None, check.into_errors());
    }
    let meta = obj.metadata.unwrap_or_default();
    if doc.get("metadata").is_none() {
        check.missing(
            "",
            "metadata",
            format!("a {kind} needs `metadata` with a `name`"),
            "add `metadata:` with `name: my-policy`",
        );
    } else {
        check.metadata(
            &meta,
            NameRule::Subdomain,
            kind == PolicyKind::Namespaced,
            kind.as_str(),
        );
    }
    let annotations = meta.annotations.unwrap_or_default();
    if let Some(v) = annotations.get(AUDIT_ANNOTATION)
        && v != "true"
        && v != "false"
    {
        check.invalid_value(
            &join_key("metadata.annotations", AUDIT_ANNOTATION),
            format!("`{AUDIT_ANNOTATION}` must be \"true\" or \"false\", not `{v}`"),
            Some("quote the value: \"true\"".into()),
        );
    }

    let mut rules = Vec::new();
    if let Some(rule) = obj.spec {
        validate::rule(&mut check, kind, "spec", &rule);
        rules.push(rule);
    }
    if let Some(specs) = obj.specs {
        for (i, rule) in specs.into_iter().enumerate() {
            validate::rule(&mut check, kind, &join_index("specs", i), &rule);
            rules.push(rule);
        }
    }
    if doc.get("spec").is_none()
        && doc.get("specs").is_none()
        && !check.suggested.contains("spec")
        && !check.suggested.contains("specs")
    {
        check.invalid(
            "",
            format!("a {kind} needs a `spec` (one rule) or `specs` (a list of rules)"),
            Some("add `spec:` with an `endpointSelector` and `ingress`/`egress` rules".into()),
        );
    }
    yaml11_booleans(&mut check, doc, "the CRD expects");
    for rule in &mut rules {
        normalize(rule);
    }

    let errors = check.into_errors();
    let Some(name) = meta.name.filter(|_| !repaired) else {
        return (None, errors);
    };
    let namespace = match kind {
        PolicyKind::Clusterwide => None,
        _ => Some(meta.namespace.unwrap_or_else(|| "default".into())),
    };
    let policy = PolicyDoc {
        kind,
        name,
        namespace,
        labels: meta.labels.unwrap_or_default(),
        annotations,
        rules,
        source: doc.source_ref(),
        raw: doc.value.clone(),
        locations: doc.locations.clone(),
    };
    (Some(policy), errors)
}

/// `kubectl` reads YAML 1.1: an unquoted `yes`, `on` or `y` reaches the API server as a
/// boolean, which it refuses wherever a string is expected (and a policy has no boolean field
/// the lab would take such a word for).
pub(super) fn yaml11_booleans(check: &mut Checker<'_>, doc: &Document, expects: &str) {
    for path in doc.locations.yaml11_booleans() {
        if check.errors.iter().any(|e| e.field == path) {
            continue;
        }
        if let Some(Value::String(word)) = doc.get(path) {
            let key = match yaml::path_segments(path).and_then(|mut s| s.pop()) {
                Some(yaml::Segment::Key(k)) => format!("{k}: "),
                _ => String::new(),
            };
            check.invalid_value(
                path,
                format!(
                    "unquoted `{word}` is a boolean for kubectl (YAML 1.1), and {expects} a string here"
                ),
                Some(format!("quote it: `{key}\"{word}\"`")),
            );
        }
    }
}

/// Cilium's minor fix-ups: `endPort: 0` means no range.
fn normalize(rule: &mut Rule) {
    let fix = |ports: &mut Option<Vec<PortProtocol>>| {
        for p in ports.iter_mut().flatten() {
            if p.end_port == Some(0) {
                p.end_port = None;
            }
        }
    };
    let allow = (rule.ingress.iter_mut().flatten().map(|r| &mut r.to_ports))
        .chain(rule.egress.iter_mut().flatten().map(|r| &mut r.to_ports));
    allow.flatten().flatten().for_each(|pr| fix(&mut pr.ports));
    let deny = (rule
        .ingress_deny
        .iter_mut()
        .flatten()
        .map(|r| &mut r.to_ports))
    .chain(
        rule.egress_deny
            .iter_mut()
            .flatten()
            .map(|r| &mut r.to_ports),
    );
    deny.flatten().flatten().for_each(|pr| fix(&mut pr.ports));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{policy::api::RuleLabel, yaml::SourceRef};

    fn parse(text: &str) -> Result<Vec<PolicyDoc>, Vec<Located>> {
        parse_policies(&Source::new("p.yaml", text))
    }

    /// A policy's head and selector; valid once a rule list follows.
    const MINIMAL: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\nspec:\n  endpointSelector: {}\n";
    /// The smallest valid policy: egress denied.
    const VALID: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\nspec:\n  endpointSelector: {}\n  egress:\n  - {}\n";

    #[test]
    fn defaults() {
        let p = &parse(VALID).unwrap()[0];
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(p.qualified_name(), "default/p");
        assert!(!p.audit_mode());
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].ingress, None);
        assert_eq!(
            p.source,
            SourceRef {
                file: "p.yaml".into(),
                document: 0,
                line: 1
            }
        );
        assert_eq!(p.raw["kind"], "CiliumNetworkPolicy");
    }

    #[test]
    fn audit_annotation() {
        let text = VALID.replace(
            "  name: p\n",
            "  name: p\n  annotations:\n    policy.lab.dev/audit-mode: \"true\"\n",
        );
        assert!(parse(&text).unwrap()[0].audit_mode());
        let text = VALID.replace(
            "  name: p\n",
            "  name: p\n  annotations:\n    policy.lab.dev/audit-mode: \"yes\"\n",
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e[0].line, 6);
    }

    #[test]
    fn end_port_zero_is_absent() {
        let text = format!(
            "{MINIMAL}  ingress:\n  - toPorts:\n    - ports:\n      - port: \"80\"\n        endPort: 0\n"
        );
        let p = &parse(&text).unwrap()[0];
        let pp = &p.rules[0].ingress.as_ref().unwrap()[0]
            .to_ports
            .as_ref()
            .unwrap()[0]
            .ports
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            (pp.port.as_str(), pp.end_port, pp.number()),
            ("80", None, Some(80))
        );
    }

    #[test]
    fn rule_labels_are_mappings() {
        let text = format!("{VALID}  labels:\n  - {{key: b, value: c}}\n");
        let p = &parse(&text).unwrap()[0];
        let l = p.rules[0].labels.as_ref().unwrap();
        assert_eq!(
            l[0],
            RuleLabel {
                key: "b".into(),
                value: "c".into(),
                source: "unspec".into()
            }
        );
        // The CRD declares each label an object: the string form is refused, with the mapping
        // to write instead.
        let e = parse(&format!("{VALID}  labels:\n  - k8s:team=a\n")).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "p.yaml:10:5: spec.labels[0]: a rule label must be a mapping with `key` (and `value`, `source`); the CRD refuses the string form\n  hint: write `{key: team, value: a, source: k8s}`"
        );
    }

    #[test]
    fn unsupported_features_keep_the_policy_in_check_mode() {
        let text = format!("{MINIMAL}  egress:\n  - toFQDNs:\n    - matchName: example.com\n");
        let c = check_policies(&Source::new("p.yaml", text));
        assert_eq!(c.policies.len(), 1);
        assert_eq!(c.errors.len(), 1);
        assert_eq!(c.errors[0].kind, ErrorKind::Unsupported);
        assert!(
            parse(&format!(
                "{MINIMAL}  egress:\n  - toFQDNs:\n    - matchName: example.com\n"
            ))
            .is_err()
        );
    }

    #[test]
    fn later_stages_can_locate_rule_fields() {
        let text =
            format!("{VALID}specs:\n- endpointSelector: {{}}\n  ingress:\n  - toPorts: []\n");
        let p = &parse(&text).unwrap()[0];
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.rule_path(0), "spec");
        assert_eq!(p.rule_path(1), "specs[0]");
        let e = p.error_at(
            &format!("{}.ingress[0].toPorts", p.rule_path(1)),
            "named ports are unsupported",
        );
        assert_eq!(
            e.to_string(),
            "p.yaml:12:5: specs[0].ingress[0].toPorts: named ports are unsupported"
        );
    }

    /// A missing required field, or a list item of the wrong type, no longer stops the checks:
    /// the rest of the document is validated in the same pass, without errors about the
    /// placeholders recovery put in their place.
    #[test]
    fn every_problem_in_one_pass() {
        let text = format!(
            "{MINIMAL}  ingress:\n  - fromEndpoints:\n    - matchExpressions:\n      - key: app\n    toPorts:\n    - ports:\n      - 80\n      - protocol: TCP\n  - fromCIDR: [10.0.0.1]\n"
        );
        let e = parse(&text).unwrap_err();
        let shown: Vec<String> = e
            .iter()
            .map(|e| format!("{}: {}: {}", e.line, e.field, e.message))
            .collect();
        assert_eq!(
            shown,
            [
                "10: spec.ingress[0].fromEndpoints[0].matchExpressions[0]: missing required field `operator`",
                "13: spec.ingress[0].toPorts[0].ports[0]: invalid type: integer `80`, expected a mapping",
                "15: spec.ingress[1].fromCIDR[0]: `10.0.0.1` needs a prefix length (the CRD accepts only CIDR notation)",
            ]
        );
        // A wrong kind and a wrong apiVersion are both reported; another kind of object only
        // for its kind.
        let e = parse(
            &VALID
                .replace("cilium.io/v2", "v1")
                .replace("CiliumNetworkPolicy", "CiliumNetworkPolicyy"),
        )
        .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        let e = parse("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n").unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
    }

    /// A misspelt rule list is reported as such, not also as a rule without lists.
    #[test]
    fn a_misspelt_section_is_reported_once() {
        let e = parse(&format!("{MINIMAL}  ingres:\n  - {{}}\n")).unwrap_err();
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["p.yaml:7:3: spec.ingres: unknown field `ingres`\n  hint: did you mean `ingress`?"]
        );
    }

    #[test]
    fn duplicate_names_in_one_file() {
        let e = parse(&format!("{VALID}---\n{VALID}")).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 13);
        assert!(e[0].message.contains("defined twice"), "{}", e[0]);
    }
}
