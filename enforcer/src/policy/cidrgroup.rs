//! `CiliumCIDRGroup` (short name `ccg`): a cluster-wide, labelled list of external CIDRs that
//! policies name instead of writing the prefixes themselves — in a `fromCIDRSet`/`toCIDRSet`
//! entry, by name (`cidrGroupRef`) or by the group's labels (`cidrGroupSelector`), in allow and
//! deny rules alike.
//!
//! ```yaml
//! apiVersion: cilium.io/v2          # or the deprecated cilium.io/v2alpha1
//! kind: CiliumCIDRGroup
//! metadata:
//!   name: vpn
//!   labels: {role: vpn}
//! spec:
//!   externalCIDRs: ["198.51.100.0/24", "2001:db8::/32"]
//! ```
//!
//! As in Cilium, a group is looked up when the policies are resolved, not when a policy is
//! accepted: a policy may name a group that does not exist yet (that entry selects nothing until
//! the group is applied), and adding, changing or deleting a group re-resolves the policy set.
//! IPv6 prefixes are accepted and select nothing in the lab's IPv4-only cluster, as in a policy.

use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::{Deserialize, Serialize, de::IgnoredAny};
use serde_json::Value;

use super::{
    api::{CidrRule, check_cidr},
    normalize::parse_cidr,
    selector::Labels,
};
use crate::yaml::{
    Checker, Document, Located, Locations, NameRule, ObjectMeta, SourceRef, join_index,
};

pub const KIND: &str = "CiliumCIDRGroup";
/// kubectl's short name for the kind.
pub const SHORT_NAME: &str = "ccg";
/// The served versions of the CRD (`v2alpha1` is deprecated but still served).
pub const API_VERSIONS: [&str; 2] = ["cilium.io/v2", "cilium.io/v2alpha1"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CidrGroupSpec {
    /// Required by the CRD; may be empty.
    #[serde(rename = "externalCIDRs")]
    pub external_cidrs: Vec<String>,
}

/// One accepted group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CidrGroupDoc {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub spec: CidrGroupSpec,
    pub source: SourceRef,
    /// The document as written, for `get -o yaml` and saving.
    #[serde(skip)]
    pub raw: Value,
    #[serde(skip)]
    pub locations: Locations,
}

impl CidrGroupDoc {
    /// The group's IPv4 prefixes (IPv6 ones select nothing in the lab).
    pub fn ipv4_prefixes(&self) -> impl Iterator<Item = (Ipv4Addr, u8)> + '_ {
        self.spec
            .external_cidrs
            .iter()
            .filter_map(|c| parse_cidr(c))
    }

    /// Whether `cidrGroupSelector` selects this group (by its labels, as Kubernetes labels).
    pub fn selected_by(&self, rule: &CidrRule) -> bool {
        match (&rule.cidr_group_ref, &rule.cidr_group_selector) {
            (Some(name), _) => *name == self.name,
            (None, Some(sel)) => sel.matches(&Labels::from_k8s(&self.labels)),
            (None, None) => false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupObject {
    #[serde(rename = "apiVersion")]
    _api_version: Option<IgnoredAny>,
    #[serde(rename = "kind")]
    _kind: Option<IgnoredAny>,
    metadata: Option<ObjectMeta>,
    spec: Option<CidrGroupSpec>,
    /// Written by the API server; accepted and ignored.
    #[serde(rename = "status")]
    _status: Option<IgnoredAny>,
}

/// Whether a document is a `CiliumCIDRGroup` (of any apiVersion, so a wrong one gets a clear
/// error).
pub fn is_cidr_group(doc: &Document) -> bool {
    doc.get("kind").and_then(Value::as_str) == Some(KIND)
}

/// One document → a group, or every error in it.
pub fn parse_cidr_group_document(doc: &Document) -> Result<CidrGroupDoc, Vec<Located>> {
    let mut decoded = doc.decode_all::<GroupObject>("");
    let mut check = Checker::from_decoded(doc, &mut decoded);
    let hint = format!("write `apiVersion: {}`", API_VERSIONS[0]);
    match doc.get("apiVersion") {
        Some(Value::String(v)) if API_VERSIONS.contains(&v.as_str()) => {}
        Some(Value::String(v)) => check.invalid_value(
            "apiVersion",
            format!("apiVersion `{v}` is not accepted for {KIND}"),
            Some(hint),
        ),
        Some(_) => check.invalid_value("apiVersion", "`apiVersion` must be a string", Some(hint)),
        None => check.invalid("", "missing required field `apiVersion`", Some(hint)),
    }
    let Some(obj) = decoded.value else {
        return Err(sorted(check.into_errors()));
    };
    let meta = obj.metadata.unwrap_or_default();
    if doc.get("metadata").is_none() {
        check.missing(
            "",
            "metadata",
            format!("a {KIND} needs `metadata` with a `name`"),
            "add `metadata:` with `name: my-group`",
        );
    } else {
        // Cluster-scoped, like a CiliumClusterwideNetworkPolicy.
        check.metadata(&meta, NameRule::Subdomain, false, KIND);
    }
    match &obj.spec {
        None => check.missing(
            "",
            "spec",
            format!("a {KIND} needs a `spec` with `externalCIDRs`"),
            "add `spec:` with `externalCIDRs: [\"198.51.100.0/24\"]`",
        ),
        Some(spec) => {
            for (i, c) in spec.external_cidrs.iter().enumerate() {
                if let Err((message, hint)) = check_cidr(c) {
                    check.invalid_value(&join_index("spec.externalCIDRs", i), message, hint);
                }
            }
        }
    }
    let errors = check.into_errors();
    match (meta.name, obj.spec) {
        (Some(name), Some(spec)) if errors.is_empty() => Ok(CidrGroupDoc {
            name,
            labels: meta.labels.unwrap_or_default(),
            spec,
            source: doc.source_ref(),
            raw: doc.value.clone(),
            locations: doc.locations.clone(),
        }),
        _ => Err(sorted(errors)),
    }
}

fn sorted(mut errors: Vec<Located>) -> Vec<Located> {
    crate::yaml::sort_errors(&mut errors);
    errors
}

/// The IPv4 prefixes a CIDR-set entry stands for: its `cidr`, or the prefixes of every group it
/// names or selects among `groups` (none when no such group exists: the entry selects nothing).
pub fn prefixes_of(rule: &CidrRule, groups: &[CidrGroupDoc]) -> Vec<(Ipv4Addr, u8)> {
    if rule.cidr_group_ref.is_none() && rule.cidr_group_selector.is_none() {
        return parse_cidr(&rule.cidr).into_iter().collect();
    }
    let mut out: Vec<(Ipv4Addr, u8)> = groups
        .iter()
        .filter(|g| g.selected_by(rule))
        .flat_map(CidrGroupDoc::ipv4_prefixes)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        policy::api::EndpointSelector,
        yaml::{Source, parse_documents},
    };

    fn parse(text: &str) -> Result<CidrGroupDoc, Vec<Located>> {
        let docs = parse_documents(&Source::new("g.yaml", text)).unwrap();
        assert!(is_cidr_group(&docs[0]));
        parse_cidr_group_document(&docs[0])
    }

    fn group(name: &str, labels: &[(&str, &str)], cidrs: &[&str]) -> CidrGroupDoc {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("    {k}: {v}\n"))
            .collect::<String>();
        let cidrs = cidrs
            .iter()
            .map(|c| format!("  - \"{c}\"\n"))
            .collect::<String>();
        parse(&format!(
            "apiVersion: cilium.io/v2\nkind: CiliumCIDRGroup\nmetadata:\n  name: {name}\n  labels:\n{labels}    x: y\nspec:\n  externalCIDRs:\n{cidrs}"
        ))
        .unwrap()
    }

    #[test]
    fn both_served_versions_and_ipv6_prefixes_are_accepted() {
        for api in API_VERSIONS {
            let g = parse(&format!("apiVersion: {api}\nkind: CiliumCIDRGroup\nmetadata:\n  name: ext\n  labels: {{destination: external}}\nspec:\n  externalCIDRs:\n  - 1.0.0.0/8\n  - 2606:4700:4700::/96\n")).unwrap();
            assert_eq!(g.name, "ext");
            assert_eq!(g.labels["destination"], "external");
            // The IPv6 prefix is kept as written and has no IPv4 effect.
            assert_eq!(g.spec.external_cidrs.len(), 2);
            assert_eq!(
                g.ipv4_prefixes().collect::<Vec<_>>(),
                vec![(Ipv4Addr::new(1, 0, 0, 0), 8)]
            );
        }
        let empty = parse("apiVersion: cilium.io/v2\nkind: CiliumCIDRGroup\nmetadata:\n  name: e\nspec:\n  externalCIDRs: []\n").unwrap();
        assert!(empty.spec.external_cidrs.is_empty());
    }

    #[test]
    fn errors_name_the_line_field_and_fix() {
        let e = parse("apiVersion: cilium.io/v1\nkind: CiliumCIDRGroup\nmetadata:\n  name: Bad_Name\n  namespace: default\nspec:\n  externalCIDRs:\n  - 10.0.0.1\n  - 10.0.0.0/33\n  - nonsense\n").unwrap_err();
        let text: Vec<String> = e.iter().map(ToString::to_string).collect();
        let has = |line: &str, what: &str| {
            text.iter()
                .any(|t| t.starts_with(&format!("g.yaml:{line}:")) && t.contains(what))
        };
        assert!(has("1", "apiVersion `cilium.io/v1`"), "{text:#?}");
        assert!(has("4", "metadata.name"), "{text:#?}");
        assert!(has("5", "not namespaced"), "{text:#?}");
        assert!(has("8", "needs a prefix length"), "{text:#?}");
        assert!(has("9", "prefix length must be 0 to 32"), "{text:#?}");
        assert!(has("10", "is not an IP address"), "{text:#?}");
        assert!(
            e.iter().all(|e| e.hint.is_some()),
            "every error says the fix: {text:#?}"
        );
        let e = parse("apiVersion: cilium.io/v2\nkind: CiliumCIDRGroup\nmetadata:\n  name: g\nspec:\n  externalCIRDs: []\n").unwrap_err();
        assert!(
            e.iter().any(|e| e.to_string().contains("externalCIDRs")),
            "{e:?}"
        );
        let e = parse("apiVersion: cilium.io/v2\nkind: CiliumCIDRGroup\nmetadata:\n  name: g\n")
            .unwrap_err();
        assert!(e[0].message.contains("needs a `spec`"), "{e:?}");
    }

    #[test]
    fn entries_stand_for_the_prefixes_of_the_groups_they_name_or_select() {
        let groups = vec![
            group(
                "a",
                &[("role", "vpn")],
                &["198.51.100.0/24", "2001:db8::/32"],
            ),
            group(
                "b",
                &[("role", "vpn")],
                &["10.20.0.0/16", "198.51.100.0/24"],
            ),
            group("c", &[("role", "other")], &["192.0.2.0/24"]),
        ];
        let by_ref = |name: &str| CidrRule {
            cidr_group_ref: Some(name.into()),
            ..Default::default()
        };
        assert_eq!(
            prefixes_of(&by_ref("a"), &groups),
            vec![(Ipv4Addr::new(198, 51, 100, 0), 24)]
        );
        assert!(
            prefixes_of(&by_ref("missing"), &groups).is_empty(),
            "a group that does not exist selects nothing"
        );
        let by_label = CidrRule {
            cidr_group_selector: Some(EndpointSelector::with_labels([("role", "vpn")])),
            ..Default::default()
        };
        assert_eq!(
            prefixes_of(&by_label, &groups),
            vec![
                (Ipv4Addr::new(10, 20, 0, 0), 16),
                (Ipv4Addr::new(198, 51, 100, 0), 24)
            ]
        );
        let plain = CidrRule {
            cidr: "192.0.2.0/24".into(),
            ..Default::default()
        };
        assert_eq!(
            prefixes_of(&plain, &[]),
            vec![(Ipv4Addr::new(192, 0, 2, 0), 24)]
        );
    }
}
