//! The types users write: a policy document ([`PolicyDoc`]) and its rules, field for field as in
//! Cilium's API (camelCase in YAML, unknown fields are errors). The `toPorts` part is in
//! `ports`.

use std::collections::BTreeMap;

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, MapAccess, Visitor},
};
use serde_json::Value;

use super::{AUDIT_ANNOTATION, PortDenyRule, PortRule};
use crate::yaml::{Located, Locations, SourceRef, join_index};

/// Which policy kind a document is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// `CiliumNetworkPolicy`: applies to endpoints in its namespace.
    Namespaced,
    /// `CiliumClusterwideNetworkPolicy`: applies cluster-wide, has no namespace.
    Clusterwide,
    /// Kubernetes `NetworkPolicy` (`networking.k8s.io/v1`), held as the Cilium rule Cilium
    /// makes of it (see `netpol`).
    Kubernetes,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Namespaced => "CiliumNetworkPolicy",
            PolicyKind::Clusterwide => "CiliumClusterwideNetworkPolicy",
            PolicyKind::Kubernetes => "NetworkPolicy",
        }
    }

    /// The kind's usual short name (`cnp`, `ccnp`).
    pub fn short_name(self) -> &'static str {
        match self {
            PolicyKind::Namespaced => "cnp",
            PolicyKind::Clusterwide => "ccnp",
            PolicyKind::Kubernetes => "netpol",
        }
    }

    /// The `apiVersion` documents of this kind are written with.
    pub fn api_version(self) -> &'static str {
        match self {
            PolicyKind::Kubernetes => super::netpol::API_VERSION,
            _ => super::API_VERSION,
        }
    }

    /// Whether policies of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        self != PolicyKind::Clusterwide
    }

    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "CiliumNetworkPolicy" => Some(PolicyKind::Namespaced),
            "CiliumClusterwideNetworkPolicy" => Some(PolicyKind::Clusterwide),
            "NetworkPolicy" => Some(PolicyKind::Kubernetes),
            _ => None,
        }
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for PolicyKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One policy document.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyDoc {
    pub kind: PolicyKind,
    pub name: String,
    /// `None` for clusterwide policies; `"default"` when a namespaced policy omits it.
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// From `spec` (one rule) followed by `specs` (many); Cilium allows both at once.
    pub rules: Vec<Rule>,
    pub source: SourceRef,
    /// The document as written, for `get -o yaml`.
    #[serde(skip)]
    pub raw: Value,
    /// Where each field of the document is, so later stages (resolution) can report errors at
    /// the right line with [`PolicyDoc::error_at`].
    #[serde(skip)]
    pub locations: Locations,
}

impl PolicyDoc {
    /// Whether the lab's per-policy audit annotation `policy.lab.dev/audit-mode: "true"` is set.
    /// (Validation accepts only `"true"` and `"false"` as its value.)
    pub fn audit_mode(&self) -> bool {
        self.annotations
            .get(AUDIT_ANNOTATION)
            .is_some_and(|v| v == "true")
    }

    /// `namespace/name` for namespaced policies, `name` for clusterwide ones.
    pub fn qualified_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The document path of `rules[index]`: `spec` for the rule written under `spec`, then
    /// `specs[i]` for the rules under `specs`.
    pub fn rule_path(&self, index: usize) -> String {
        match (self.raw.get("spec").is_some(), index) {
            (true, 0) => "spec".to_owned(),
            (true, i) => join_index("specs", i - 1),
            (false, i) => join_index("specs", i),
        }
    }

    /// An error at a field of this policy's document (path as in [`crate::yaml`], for example
    /// `format!("{}.ingress[0].toPorts", doc.rule_path(0))`), at the field's line.
    pub fn error_at(&self, path: &str, message: impl Into<String>) -> Located {
        let at = self
            .locations
            .line_of(path)
            .unwrap_or((self.source.line, 1));
        Located::new(&self.source.file, at, path, message)
    }
}

/// One rule: which endpoints it applies to and what it allows or denies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_selector: Option<EndpointSelector>,
    /// Host policies; parsed, then reported unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<EndpointSelector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<IngressRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress_deny: Option<Vec<IngressDenyRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<EgressRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_deny: Option<Vec<EgressDenyRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<RuleLabel>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_default_deny: Option<DefaultDeny>,
}

/// `enableDefaultDeny`: whether selecting an endpoint puts that direction in default deny.
/// Absent means Cilium's default (yes, when the rule has rules in that direction).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultDeny {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<bool>,
}

/// A rule label: `{key, value, source}`. The string form `source:key=value` is decoded too, so
/// that validation can refuse it with the mapping to write (the CRD takes only mappings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleLabel {
    pub key: String,
    pub value: String,
    /// `unspec` when not given.
    pub source: String,
}

impl<'de> Deserialize<'de> for RuleLabel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            key: String,
            #[serde(default)]
            value: String,
            source: Option<String>,
        }
        struct LabelVisitor;
        impl<'de> Visitor<'de> for LabelVisitor {
            type Value = RuleLabel;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a label as `source:key=value` or {key, value, source}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RuleLabel, E> {
                let (source, rest) = v.split_once(':').unwrap_or(("unspec", v));
                let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
                if key.is_empty() {
                    return Err(E::custom("a rule label needs a key"));
                }
                Ok(RuleLabel {
                    key: key.into(),
                    value: value.into(),
                    source: source.into(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RuleLabel, A::Error> {
                let f = Fields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RuleLabel {
                    key: f.key,
                    value: f.value,
                    source: f.source.unwrap_or_else(|| "unspec".into()),
                })
            }
        }
        d.deserialize_any(LabelVisitor)
    }
}

/// A Kubernetes-style label selector. An empty selector (`{}`) selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointSelector {
    /// Keys may carry a source prefix (`k8s:org`, `any:org`, `reserved:host`); see
    /// [`crate::policy::selector`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: Operator,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Cilium's entities: groups of peers known without labels or addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Entity {
    #[serde(rename = "all")]
    All,
    #[serde(rename = "world")]
    World,
    #[serde(rename = "cluster")]
    Cluster,
    #[serde(rename = "host")]
    Host,
    #[serde(rename = "remote-node")]
    RemoteNode,
    #[serde(rename = "kube-apiserver")]
    KubeApiserver,
    #[serde(rename = "ingress")]
    Ingress,
    #[serde(rename = "init")]
    Init,
    #[serde(rename = "health")]
    Health,
    #[serde(rename = "unmanaged")]
    Unmanaged,
    #[serde(rename = "none")]
    None,
    #[serde(rename = "world-ipv4")]
    WorldIpv4,
    #[serde(rename = "world-ipv6")]
    WorldIpv6,
}

impl Entity {
    pub const ALL: [Entity; 13] = [
        Entity::All,
        Entity::World,
        Entity::Cluster,
        Entity::Host,
        Entity::RemoteNode,
        Entity::KubeApiserver,
        Entity::Ingress,
        Entity::Init,
        Entity::Health,
        Entity::Unmanaged,
        Entity::None,
        Entity::WorldIpv4,
        Entity::WorldIpv6,
    ];

    /// The name as written in policies (`remote-node`).
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::All => "all",
            Entity::World => "world",
            Entity::Cluster => "cluster",
            Entity::Host => "host",
            Entity::RemoteNode => "remote-node",
            Entity::KubeApiserver => "kube-apiserver",
            Entity::Ingress => "ingress",
            Entity::Init => "init",
            Entity::Health => "health",
            Entity::Unmanaged => "unmanaged",
            Entity::None => "none",
            Entity::WorldIpv4 => "world-ipv4",
            Entity::WorldIpv6 => "world-ipv6",
        }
    }
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An allow rule at ingress. All fields present must match (AND); an absent peer field means
/// "any peer" when `toPorts` is present.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_endpoints: Option<Vec<EndpointSelector>>,
    /// Deprecated: the CRD allows no entries (an empty list is accepted and means nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_requires: Option<Vec<EndpointSelector>>,
    #[serde(rename = "fromCIDR", skip_serializing_if = "Option::is_none")]
    pub from_cidr: Option<Vec<String>>,
    #[serde(rename = "fromCIDRSet", skip_serializing_if = "Option::is_none")]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_entities: Option<Vec<Entity>>,
    /// Unsupported (cloud provider groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_groups: Option<Vec<Value>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_nodes: Option<Vec<EndpointSelector>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_ports: Option<Vec<PortRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmps: Option<Vec<IcmpRule>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
}

/// A deny rule at ingress: like [`IngressRule`] without L7 rules or authentication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressDenyRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_endpoints: Option<Vec<EndpointSelector>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_requires: Option<Vec<EndpointSelector>>,
    #[serde(rename = "fromCIDR", skip_serializing_if = "Option::is_none")]
    pub from_cidr: Option<Vec<String>>,
    #[serde(rename = "fromCIDRSet", skip_serializing_if = "Option::is_none")]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_entities: Option<Vec<Entity>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_groups: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_nodes: Option<Vec<EndpointSelector>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_ports: Option<Vec<PortDenyRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmps: Option<Vec<IcmpRule>>,
}

/// An allow rule at egress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_endpoints: Option<Vec<EndpointSelector>>,
    /// Deprecated: the CRD allows no entries (an empty list is accepted and means nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_requires: Option<Vec<EndpointSelector>>,
    #[serde(rename = "toCIDR", skip_serializing_if = "Option::is_none")]
    pub to_cidr: Option<Vec<String>>,
    #[serde(rename = "toCIDRSet", skip_serializing_if = "Option::is_none")]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_entities: Option<Vec<Entity>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_services: Option<Vec<Value>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_groups: Option<Vec<Value>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_nodes: Option<Vec<EndpointSelector>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_ports: Option<Vec<PortRule>>,
    /// Unsupported.
    #[serde(rename = "toFQDNs", skip_serializing_if = "Option::is_none")]
    pub to_fqdns: Option<Vec<FqdnSelector>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmps: Option<Vec<IcmpRule>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
}

/// A deny rule at egress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressDenyRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_endpoints: Option<Vec<EndpointSelector>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_requires: Option<Vec<EndpointSelector>>,
    #[serde(rename = "toCIDR", skip_serializing_if = "Option::is_none")]
    pub to_cidr: Option<Vec<String>>,
    #[serde(rename = "toCIDRSet", skip_serializing_if = "Option::is_none")]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_entities: Option<Vec<Entity>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_services: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_groups: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_nodes: Option<Vec<EndpointSelector>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_ports: Option<Vec<PortDenyRule>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmps: Option<Vec<IcmpRule>>,
}

/// `fromCIDRSet` / `toCIDRSet` entry: a prefix, or the prefixes of CiliumCIDRGroups, minus
/// exceptions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CidrRule {
    /// A prefix such as `10.0.0.0/8`. Empty when a CIDR group is used instead.
    #[serde(default)]
    pub cidr: String,
    /// Left out of the prefix (or of each prefix of the groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub except: Option<Vec<String>>,
    /// The name of a CiliumCIDRGroup whose prefixes this entry stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr_group_ref: Option<String>,
    /// The CiliumCIDRGroups, by their labels, whose prefixes this entry stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr_group_selector: Option<EndpointSelector>,
}

/// `toFQDNs` entry and DNS L7 rule (both unsupported).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FqdnSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_pattern: Option<String>,
}

/// `icmps` entry: ICMP types, matched like ports of protocol ICMP (see `icmp`). `fields` may
/// be left out (the CRD does not require it); such an entry allows nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpRule {
    #[serde(default)]
    pub fields: Vec<IcmpField>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpField {
    /// `IPv4` (default) or `IPv6`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// A type number or name (`Null` when missing, which validation reports).
    #[serde(rename = "type")]
    pub icmp_type: Value,
}

/// `authentication` (unsupported).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    pub mode: String,
}
