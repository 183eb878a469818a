//! The policies users write: Cilium's `cilium.io/v2` `CiliumNetworkPolicy` and
//! `CiliumClusterwideNetworkPolicy`, parsed and validated. This layer knows nothing of
//! identities, endpoints or BPF maps; resolution works from the types defined here.
//!
//! - [`parse_policies`]: a [`Source`] → every [`PolicyDoc`] in it, or every error in it.
//! - [`check_policies`]: the same, but keeps the policies that are valid Cilium while listing all
//!   problems (for the web editor and `lab policy check`).
//! - [`parse_policy_document`]: one already-parsed [`Document`].
//!
//! The types mirror Cilium's API field for field (camelCase in YAML, unknown fields are errors).
//! Lists stay `Option<Vec<_>>` because Cilium gives an absent list and an empty list different
//! meanings (`ingress: []` versus no `ingress`; `fromEndpoints: []` selects nothing).
//!
//! Features that are valid Cilium but that the lab does not implement are parsed (so their
//! syntax is still checked) and then reported as errors of kind [`ErrorKind::Unsupported`]
//! saying "… is valid Cilium but not supported by the lab yet" — never silently ignored: `toFQDNs`,
//! `toServices`, `toGroups`/`fromGroups`, `toRequires`/`fromRequires`, `toNodes`/`fromNodes`,
//! `nodeSelector`, `icmps`, `authentication`, `serverNames`, `listener`, `originatingTLS`,
//! `terminatingTLS`, `headerMatches`, `kafka`/`dns`/`l7proto` rules, named ports, CIDR groups and
//! the ICMP/ICMPV6/VRRP/IGMP protocols.
//!
//! Lab extension: the annotation `policy.lab.dev/audit-mode: "true"` puts one policy in audit
//! mode (would-be drops it causes are reported with verdict AUDIT and forwarded). Cilium only has
//! audit mode per agent or per endpoint; users have long asked for it per policy.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, IgnoredAny, MapAccess, Visitor},
};
use serde_json::Value;

use crate::yaml::{
    self, Document, ErrorKind, Located, Locations, NameRule, ObjectMeta, Source, SourceRef,
    UNSUPPORTED_MARK, join_index, join_key, names, parse_documents, suggest,
};

/// The only accepted `apiVersion`.
pub const API_VERSION: &str = "cilium.io/v2";

/// The lab's per-policy audit annotation (see the module documentation).
pub const AUDIT_ANNOTATION: &str = "policy.lab.dev/audit-mode";

/// The most ports one `toPorts` entry may list (Cilium's limit).
pub const MAX_PORTS: usize = 40;

// ---------------------------------------------------------------------------------------------
// Types

/// Which policy kind a document is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// `CiliumNetworkPolicy`: applies to endpoints in its namespace.
    Namespaced,
    /// `CiliumClusterwideNetworkPolicy`: applies cluster-wide, has no namespace.
    Clusterwide,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Namespaced => "CiliumNetworkPolicy",
            PolicyKind::Clusterwide => "CiliumClusterwideNetworkPolicy",
        }
    }

    /// The kind's usual short name (`cnp`, `ccnp`).
    pub fn short_name(self) -> &'static str {
        match self {
            PolicyKind::Namespaced => "cnp",
            PolicyKind::Clusterwide => "ccnp",
        }
    }

    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "CiliumNetworkPolicy" => Some(PolicyKind::Namespaced),
            "CiliumClusterwideNetworkPolicy" => Some(PolicyKind::Clusterwide),
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

/// A rule label: `{key, value, source}`, or the string form `source:key=value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleLabel {
    pub key: String,
    pub value: String,
    /// `unspec` when not given.
    pub source: String,
}

/// A Kubernetes-style label selector. An empty selector (`{}`) selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointSelector {
    /// Keys may carry a source prefix (`k8s:org`, `any:org`, `reserved:host`); see
    /// [`super::selector`].
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
    /// Unsupported.
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
    /// Unsupported.
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
    /// Unsupported.
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
    /// Unsupported.
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

/// `fromCIDRSet` / `toCIDRSet` entry: a prefix minus exceptions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CidrRule {
    /// A prefix such as `10.0.0.0/8`. Empty only when a CIDR group is used (unsupported).
    #[serde(default)]
    pub cidr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub except: Option<Vec<String>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr_group_ref: Option<String>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr_group_selector: Option<EndpointSelector>,
}

/// A `toPorts` entry of an allow rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortProtocol>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<L7Rules>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_names: Option<Vec<String>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<Value>,
    /// Unsupported.
    #[serde(rename = "originatingTLS", skip_serializing_if = "Option::is_none")]
    pub originating_tls: Option<Value>,
    /// Unsupported.
    #[serde(rename = "terminatingTLS", skip_serializing_if = "Option::is_none")]
    pub terminating_tls: Option<Value>,
}

/// A `toPorts` entry of a deny rule: ports only (deny rules have no L7 rules).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortDenyRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortProtocol>>,
}

/// A port (or range) and protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortProtocol {
    /// A number `0`..=`65535` (`"0"` = every port) or a port name; YAML may write it as a number
    /// or a string. Named ports are reported unsupported.
    #[serde(deserialize_with = "port_string")]
    pub port: String,
    /// Last port of a range `port..=endPort`. Cilium treats `0` as absent, and so does the parser
    /// (it becomes `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
    /// Absent means any protocol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

impl PortProtocol {
    /// The port number, when the port is numeric.
    pub fn number(&self) -> Option<u16> {
        if self.port.bytes().all(|b| b.is_ascii_digit()) {
            self.port.parse().ok()
        } else {
            None
        }
    }
}

/// L4 protocol of a port rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Any,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Any => "ANY",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            "ANY" => Ok(Protocol::Any),
            "ICMP" | "ICMPV6" | "ICMPv6" | "VRRP" | "IGMP" => Err(de::Error::custom(format!(
                "protocol `{s}` is valid Cilium {UNSUPPORTED_MARK}"
            ))),
            _ => Err(de::Error::unknown_variant(
                &s,
                &["TCP", "UDP", "SCTP", "ANY"],
            )),
        }
    }
}

/// A port number written as a YAML number or string, kept as a string.
fn port_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct PortVisitor;
    impl Visitor<'_> for PortVisitor {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a port number or name")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
    }
    d.deserialize_any(PortVisitor)
}

/// Layer-7 rules of a `toPorts` entry; at most one kind per entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7Rules {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<HttpRule>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<Vec<Value>>,
    /// Unsupported (and egress only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<FqdnSelector>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7proto: Option<String>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7: Option<Vec<BTreeMap<String, String>>>,
}

/// One HTTP rule: a request is allowed if it matches every field given. `method`, `path` and
/// `host` are regular expressions matched against the whole string.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `"Name"` (present) or `"Name: value"` (equal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_matches: Option<Vec<Value>>,
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

/// `icmps` entry (unsupported).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpRule {
    pub fields: Vec<IcmpField>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpField {
    /// `IPv4` (default) or `IPv6`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// A type number or name.
    #[serde(rename = "type")]
    pub icmp_type: Value,
}

/// `authentication` (unsupported).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    pub mode: String,
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

// ---------------------------------------------------------------------------------------------
// Parsing

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
    let mut seen: HashMap<(PolicyKind, Option<String>, String), usize> = HashMap::new();
    for doc in &docs {
        let (policy, mut errors) = check_document(doc);
        if let Some(p) = &policy {
            let key = (p.kind, p.namespace.clone(), p.name.clone());
            if let Some(first) = seen.insert(key, doc.start_line) {
                errors.push(
                    doc.value_error(
                        "metadata.name",
                        format!(
                            "{} `{}` is defined twice in this file (first at line {first})",
                            p.kind,
                            p.qualified_name()
                        ),
                    )
                    .with_hint("give each policy its own name, or merge their rules with `specs:`"),
                );
            }
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
    match check_document(doc) {
        (Some(p), e) if e.is_empty() => Ok(p),
        (_, mut e) => {
            yaml::sort_errors(&mut e);
            Err(e)
        }
    }
}

const ACCEPTED: &str = "accepted here: `CiliumNetworkPolicy` and `CiliumClusterwideNetworkPolicy` with `apiVersion: cilium.io/v2`";

/// Recognises the kind and apiVersion; errors if the document is not a Cilium policy.
fn check_kind(doc: &Document) -> Result<PolicyKind, Vec<Located>> {
    if !doc.value.is_object() {
        return Err(vec![doc.error(
            "",
            "a policy document must be a mapping with `apiVersion`, `kind`, `metadata` and `spec`",
        )]);
    }
    let kind = match doc.get("kind") {
        None => {
            return Err(vec![
                doc.error("", "missing required field `kind`")
                    .with_hint(ACCEPTED),
            ]);
        }
        Some(Value::String(k)) => match PolicyKind::from_kind(k) {
            Some(kind) => kind,
            None => {
                let known = ["CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"];
                let hint = match (k.as_str(), suggest(k, known)) {
                    ("NetworkPolicy", _) => format!(
                        "Kubernetes NetworkPolicy is not supported by the lab; write it as a CiliumNetworkPolicy ({ACCEPTED})"
                    ),
                    (_, Some(s)) if s != k => format!("did you mean `{s}`?"),
                    _ => ACCEPTED.to_owned(),
                };
                return Err(vec![
                    doc.value_error("kind", format!("`{k}` is not a Cilium network policy kind"))
                        .with_hint(hint),
                ]);
            }
        },
        Some(_) => {
            return Err(vec![
                doc.value_error("kind", "`kind` must be a string")
                    .with_hint(ACCEPTED),
            ]);
        }
    };
    match doc.get("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => Ok(kind),
        Some(Value::String(v)) => Err(vec![
            doc.value_error(
                "apiVersion",
                format!("apiVersion `{v}` is not accepted for {kind}"),
            )
            .with_hint(format!("write `apiVersion: {API_VERSION}`")),
        ]),
        Some(_) => Err(vec![
            doc.value_error("apiVersion", "`apiVersion` must be a string")
                .with_hint(format!("write `apiVersion: {API_VERSION}`")),
        ]),
        None => Err(vec![
            doc.error("", "missing required field `apiVersion`")
                .with_hint(format!("write `apiVersion: {API_VERSION}`")),
        ]),
    }
}

/// Decodes and validates one document. Returns the policy when it could be built (even if it has
/// errors) and every error.
fn check_document(doc: &Document) -> (Option<PolicyDoc>, Vec<Located>) {
    let kind = match check_kind(doc) {
        Ok(k) => k,
        Err(e) => return (None, e),
    };
    let decoded = doc.decode::<PolicyObject>("");
    // Decoding errors mean fields were dropped or repaired: the rest is still checked, but the
    // policy is not returned, since it no longer says what was written.
    let repaired = !decoded.errors.is_empty();
    let mut errors = decoded.errors;
    let Some(obj) = decoded.value else {
        return (None, errors);
    };
    if !decoded.paths_exact {
        // List items were dropped, so further checks would point at the wrong lines.
        return (None, errors);
    }
    // Fields a "did you mean" already points to are not reported missing as well.
    let suggested = yaml::suggested_fields(&errors);
    let meta = obj.metadata.unwrap_or_default();
    if doc.get("metadata").is_none() {
        if !suggested.contains("metadata") {
            errors.push(
                doc.error("", format!("a {kind} needs `metadata` with a `name`"))
                    .with_hint("add `metadata:` with `name: my-policy`"),
            );
        }
    } else {
        let mut meta_errors = yaml::check_metadata(
            doc,
            "metadata",
            &meta,
            NameRule::Subdomain,
            kind == PolicyKind::Namespaced,
            kind.as_str(),
        );
        if suggested.contains("metadata.name") {
            meta_errors.retain(|e| e.field != "metadata");
        }
        errors.extend(meta_errors);
    }
    let annotations = meta.annotations.unwrap_or_default();
    if let Some(v) = annotations.get(AUDIT_ANNOTATION)
        && v != "true"
        && v != "false"
    {
        errors.push(
            doc.value_error(
                &join_key("metadata.annotations", AUDIT_ANNOTATION),
                format!("`{AUDIT_ANNOTATION}` must be \"true\" or \"false\", not `{v}`"),
            )
            .with_hint("quote the value: \"true\""),
        );
    }

    let mut rules = Vec::new();
    let mut ctx = Ctx {
        doc,
        errors: Vec::new(),
        kind,
        suggested,
    };
    if let Some(rule) = obj.spec {
        ctx.rule("spec", &rule);
        rules.push(rule);
    }
    if let Some(specs) = obj.specs {
        for (i, rule) in specs.into_iter().enumerate() {
            ctx.rule(&join_index("specs", i), &rule);
            rules.push(rule);
        }
    }
    if doc.get("spec").is_none()
        && doc.get("specs").is_none()
        && !ctx.suggested.contains("spec")
        && !ctx.suggested.contains("specs")
    {
        ctx.errors.push(
            doc.error(
                "",
                format!("a {kind} needs a `spec` (one rule) or `specs` (a list of rules)"),
            )
            .with_hint("add `spec:` with an `endpointSelector` and `ingress`/`egress` rules"),
        );
    }
    errors.extend(ctx.errors);
    for rule in &mut rules {
        normalize(rule);
    }

    let Some(name) = meta.name.filter(|_| !repaired) else {
        return (None, errors);
    };
    let namespace = match kind {
        PolicyKind::Namespaced => Some(meta.namespace.unwrap_or_else(|| "default".into())),
        PolicyKind::Clusterwide => None,
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

/// Cilium's minor fix-ups: `endPort: 0` means no range.
fn normalize(rule: &mut Rule) {
    let fix = |ports: &mut Option<Vec<PortProtocol>>| {
        for p in ports.iter_mut().flatten() {
            if p.end_port == Some(0) {
                p.end_port = None;
            }
        }
    };
    for r in rule.ingress.iter_mut().flatten() {
        r.to_ports
            .iter_mut()
            .flatten()
            .for_each(|pr| fix(&mut pr.ports));
    }
    for r in rule.egress.iter_mut().flatten() {
        r.to_ports
            .iter_mut()
            .flatten()
            .for_each(|pr| fix(&mut pr.ports));
    }
    for r in rule.ingress_deny.iter_mut().flatten() {
        r.to_ports
            .iter_mut()
            .flatten()
            .for_each(|pr| fix(&mut pr.ports));
    }
    for r in rule.egress_deny.iter_mut().flatten() {
        r.to_ports
            .iter_mut()
            .flatten()
            .for_each(|pr| fix(&mut pr.ports));
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    /// `fromX` at ingress, `toX` at egress.
    fn peer(self, what: &str) -> String {
        match self {
            Dir::Ingress => format!("from{what}"),
            Dir::Egress => format!("to{what}"),
        }
    }
}

struct Ctx<'d> {
    doc: &'d Document,
    errors: Vec<Located>,
    kind: PolicyKind,
    /// Fields that "did you mean" hints point to (see [`yaml::suggested_fields`]).
    suggested: std::collections::HashSet<String>,
}

/// The last key of a path, for messages.
fn field_name(path: &str) -> String {
    match yaml::path_segments(path).and_then(|mut s| s.pop()) {
        Some(yaml::Segment::Key(k)) => k,
        _ => path.to_owned(),
    }
}

impl Ctx<'_> {
    /// An error at the field's key.
    fn invalid(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        let mut e = self.doc.error(path, message);
        e.hint = hint;
        self.errors.push(e);
    }

    /// An error at the field's value.
    fn invalid_value(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        let mut e = self.doc.value_error(path, message);
        e.hint = hint;
        self.errors.push(e);
    }

    fn unsupported(&mut self, path: &str, hint: &str) {
        let what = field_name(path);
        self.unsupported_msg(
            path,
            format!("`{what}` is valid Cilium {UNSUPPORTED_MARK}"),
            hint,
        );
    }

    fn unsupported_msg(&mut self, path: &str, message: String, hint: &str) {
        let e = self
            .doc
            .error(path, message)
            .with_kind(ErrorKind::Unsupported)
            .with_hint(hint);
        self.errors.push(e);
    }

    fn rule(&mut self, path: &str, rule: &Rule) {
        let es = join_key(path, "endpointSelector");
        let ns = join_key(path, "nodeSelector");
        match (&rule.endpoint_selector, &rule.node_selector) {
            (None, None) if self.suggested.contains(&es) || self.suggested.contains(&ns) => {}
            (None, None) => self.invalid(
                path,
                "a rule needs an `endpointSelector` (the endpoints it applies to)",
                Some(format!(
                    "write `endpointSelector: {{matchLabels: {{app: my-app}}}}`, or `endpointSelector: {{}}` for every endpoint {}",
                    if self.kind == PolicyKind::Namespaced { "in the namespace" } else { "in the cluster" }
                )),
            ),
            (Some(_), Some(_)) => self.invalid(
                &ns,
                "a rule cannot have both `endpointSelector` and `nodeSelector`",
                Some("keep `endpointSelector`".into()),
            ),
            _ => {}
        }
        if let Some(s) = &rule.endpoint_selector {
            self.selector(&es, s);
        }
        if let Some(s) = &rule.node_selector {
            self.selector(&ns, s);
            if self.kind == PolicyKind::Namespaced {
                self.invalid(
                    &ns,
                    "`nodeSelector` is only allowed in a CiliumClusterwideNetworkPolicy",
                    Some("use `endpointSelector` to select pods".into()),
                );
            } else {
                self.unsupported(
                    &ns,
                    "host policies are not implemented; select pods with `endpointSelector`",
                );
            }
        }
        for (i, r) in rule.ingress.iter().flatten().enumerate() {
            let p = join_index(&join_key(path, "ingress"), i);
            self.ingress(&p, r);
        }
        for (i, r) in rule.ingress_deny.iter().flatten().enumerate() {
            let p = join_index(&join_key(path, "ingressDeny"), i);
            self.ingress_deny(&p, r);
        }
        for (i, r) in rule.egress.iter().flatten().enumerate() {
            let p = join_index(&join_key(path, "egress"), i);
            self.egress(&p, r);
        }
        for (i, r) in rule.egress_deny.iter().flatten().enumerate() {
            let p = join_index(&join_key(path, "egressDeny"), i);
            self.egress_deny(&p, r);
        }
        for (i, l) in rule.labels.iter().flatten().enumerate() {
            if l.key.is_empty() {
                self.invalid(
                    &join_index(&join_key(path, "labels"), i),
                    "a rule label needs a `key`",
                    None,
                );
            }
        }
    }

    fn selector(&mut self, path: &str, sel: &EndpointSelector) {
        let ml = join_key(path, "matchLabels");
        for (key, value) in sel.match_labels.iter().flatten() {
            let p = join_key(&ml, key);
            if let Err(e) = super::selector::validate_selector_key(key) {
                self.invalid(&p, e.message, e.hint);
            }
            if let Err(e) = super::selector::validate_label_value(value) {
                self.invalid_value(&p, e.message, e.hint);
            }
        }
        let me = join_key(path, "matchExpressions");
        for (i, req) in sel.match_expressions.iter().flatten().enumerate() {
            let p = join_index(&me, i);
            if let Err(e) = super::selector::validate_selector_key(&req.key) {
                self.invalid_value(&join_key(&p, "key"), e.message, e.hint);
            }
            let values = req.values.as_deref().unwrap_or_default();
            match req.operator {
                Operator::In | Operator::NotIn if values.is_empty() => self.invalid(
                    &p,
                    format!(
                        "operator `{:?}` needs at least one entry in `values`",
                        req.operator
                    ),
                    Some("add `values: [a, b]`, or use `Exists` / `DoesNotExist`".into()),
                ),
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => self.invalid(
                    &join_key(&p, "values"),
                    format!("operator `{:?}` takes no `values`", req.operator),
                    Some("remove `values`, or use `In` / `NotIn` to compare values".into()),
                ),
                _ => {}
            }
            for (j, v) in values.iter().enumerate() {
                if let Err(e) = super::selector::validate_label_value(v) {
                    self.invalid_value(&join_index(&join_key(&p, "values"), j), e.message, e.hint);
                }
            }
        }
    }

    fn selectors(&mut self, path: &str, list: &Option<Vec<EndpointSelector>>) {
        for (i, s) in list.iter().flatten().enumerate() {
            self.selector(&join_index(path, i), s);
        }
    }

    /// The peer fields both ingress/egress allow and deny rules share.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per Cilium peer field"
    )]
    fn peers(
        &mut self,
        path: &str,
        dir: Dir,
        endpoints: &Option<Vec<EndpointSelector>>,
        requires: &Option<Vec<EndpointSelector>>,
        cidr: &Option<Vec<String>>,
        cidr_set: &Option<Vec<CidrRule>>,
        entities: &Option<Vec<Entity>>,
        groups: &Option<Vec<Value>>,
        nodes: &Option<Vec<EndpointSelector>>,
    ) {
        let f = |what: &str| join_key(path, &dir.peer(what));
        self.selectors(&f("Endpoints"), endpoints);
        if requires.is_some() {
            self.selectors(&f("Requires"), requires);
            self.unsupported(&f("Requires"), "it is deprecated in Cilium; put the requirement into each endpoint selector instead");
        }
        for (i, c) in cidr.iter().flatten().enumerate() {
            self.cidr(&join_index(&f("CIDR"), i), c, false);
        }
        for (i, c) in cidr_set.iter().flatten().enumerate() {
            self.cidr_rule(&join_index(&f("CIDRSet"), i), c);
        }
        let _ = entities; // Checked by deserialization: every Entity is valid.
        if groups.is_some() {
            self.unsupported(
                &f("Groups"),
                "cloud provider groups do not exist in the lab; list the addresses with CIDR rules",
            );
        }
        if nodes.is_some() {
            self.selectors(&f("Nodes"), nodes);
            let entity = if dir == Dir::Ingress {
                "fromEntities"
            } else {
                "toEntities"
            };
            self.unsupported(
                &f("Nodes"),
                &format!("use `{entity}: [host]` or `[remote-node]`"),
            );
        }
    }

    /// Cilium rejects rules that combine two kinds of peer selector.
    fn peer_combination(&mut self, path: &str, present: &[(&str, usize)]) {
        let used: Vec<&str> = present
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(f, _)| *f)
            .collect();
        if used.len() > 1 {
            let listed = used
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(" and ");
            self.invalid(
                &join_key(path, used[1]),
                format!("{listed} cannot be combined in one rule"),
                Some(
                    "Cilium rejects this; write one rule per kind of peer (rules are ORed)".into(),
                ),
            );
        }
    }

    fn ingress(&mut self, path: &str, r: &IngressRule) {
        self.peers(
            path,
            Dir::Ingress,
            &r.from_endpoints,
            &r.from_requires,
            &r.from_cidr,
            &r.from_cidr_set,
            &r.from_entities,
            &r.from_groups,
            &r.from_nodes,
        );
        self.peer_combination(
            path,
            &[
                ("fromEndpoints", len(&r.from_endpoints)),
                ("fromCIDR", len(&r.from_cidr)),
                ("fromCIDRSet", len(&r.from_cidr_set)),
                ("fromEntities", len(&r.from_entities)),
                ("fromGroups", len(&r.from_groups)),
                ("fromNodes", len(&r.from_nodes)),
            ],
        );
        for (i, pr) in r.to_ports.iter().flatten().enumerate() {
            self.port_rule(&join_index(&join_key(path, "toPorts"), i), pr, Dir::Ingress);
        }
        self.icmps(path, &r.icmps, len(&r.to_ports));
        if let Some(a) = &r.authentication {
            self.authentication(&join_key(path, "authentication"), a);
        }
    }

    fn ingress_deny(&mut self, path: &str, r: &IngressDenyRule) {
        self.peers(
            path,
            Dir::Ingress,
            &r.from_endpoints,
            &r.from_requires,
            &r.from_cidr,
            &r.from_cidr_set,
            &r.from_entities,
            &r.from_groups,
            &r.from_nodes,
        );
        self.peer_combination(
            path,
            &[
                ("fromEndpoints", len(&r.from_endpoints)),
                ("fromCIDR", len(&r.from_cidr)),
                ("fromCIDRSet", len(&r.from_cidr_set)),
                ("fromEntities", len(&r.from_entities)),
                ("fromGroups", len(&r.from_groups)),
                ("fromNodes", len(&r.from_nodes)),
            ],
        );
        for (i, pr) in r.to_ports.iter().flatten().enumerate() {
            self.ports(
                &join_key(&join_index(&join_key(path, "toPorts"), i), "ports"),
                &pr.ports,
            );
        }
        self.icmps(path, &r.icmps, len(&r.to_ports));
    }

    fn egress(&mut self, path: &str, r: &EgressRule) {
        self.peers(
            path,
            Dir::Egress,
            &r.to_endpoints,
            &r.to_requires,
            &r.to_cidr,
            &r.to_cidr_set,
            &r.to_entities,
            &r.to_groups,
            &r.to_nodes,
        );
        self.egress_only(path, &r.to_services, len(&r.to_ports));
        if r.to_fqdns.is_some() {
            self.unsupported(&join_key(path, "toFQDNs"), "DNS-based rules need a DNS proxy the lab does not have; allow the addresses with `toCIDR` / `toCIDRSet`");
        }
        self.peer_combination(
            path,
            &[
                ("toEndpoints", len(&r.to_endpoints)),
                ("toCIDR", len(&r.to_cidr)),
                ("toCIDRSet", len(&r.to_cidr_set)),
                ("toEntities", len(&r.to_entities)),
                ("toServices", len(&r.to_services)),
                ("toFQDNs", len(&r.to_fqdns)),
                ("toGroups", len(&r.to_groups)),
                ("toNodes", len(&r.to_nodes)),
            ],
        );
        for (i, pr) in r.to_ports.iter().flatten().enumerate() {
            self.port_rule(&join_index(&join_key(path, "toPorts"), i), pr, Dir::Egress);
        }
        self.icmps(path, &r.icmps, len(&r.to_ports));
        if let Some(a) = &r.authentication {
            self.authentication(&join_key(path, "authentication"), a);
        }
    }

    fn egress_deny(&mut self, path: &str, r: &EgressDenyRule) {
        self.peers(
            path,
            Dir::Egress,
            &r.to_endpoints,
            &r.to_requires,
            &r.to_cidr,
            &r.to_cidr_set,
            &r.to_entities,
            &r.to_groups,
            &r.to_nodes,
        );
        self.egress_only(path, &r.to_services, len(&r.to_ports));
        self.peer_combination(
            path,
            &[
                ("toEndpoints", len(&r.to_endpoints)),
                ("toCIDR", len(&r.to_cidr)),
                ("toCIDRSet", len(&r.to_cidr_set)),
                ("toEntities", len(&r.to_entities)),
                ("toServices", len(&r.to_services)),
                ("toGroups", len(&r.to_groups)),
                ("toNodes", len(&r.to_nodes)),
            ],
        );
        for (i, pr) in r.to_ports.iter().flatten().enumerate() {
            self.ports(
                &join_key(&join_index(&join_key(path, "toPorts"), i), "ports"),
                &pr.ports,
            );
        }
        self.icmps(path, &r.icmps, len(&r.to_ports));
    }

    fn egress_only(&mut self, path: &str, services: &Option<Vec<Value>>, ports: usize) {
        if services.is_some() {
            let p = join_key(path, "toServices");
            self.unsupported(&p, "select the service's pods with `toEndpoints` instead");
            if len(services) > 0 && ports > 0 {
                self.invalid(
                    &p,
                    "`toServices` cannot be combined with `toPorts`",
                    Some("Cilium rejects this combination".into()),
                );
            }
        }
    }

    fn icmps(&mut self, path: &str, icmps: &Option<Vec<IcmpRule>>, ports: usize) {
        if icmps.is_none() {
            return;
        }
        let p = join_key(path, "icmps");
        self.unsupported(&p, "ICMP is not filtered by the lab; leave `icmps` out");
        for (i, rule) in icmps.iter().flatten().enumerate() {
            for (j, f) in rule.fields.iter().enumerate() {
                if let Some(fam) = &f.family
                    && fam != "IPv4"
                    && fam != "IPv6"
                {
                    let fp = join_key(
                        &join_index(&join_key(&join_index(&p, i), "fields"), j),
                        "family",
                    );
                    self.invalid_value(
                        &fp,
                        format!("ICMP family `{fam}` is not `IPv4` or `IPv6`"),
                        None,
                    );
                }
            }
        }
        if len(icmps) > 0 && ports > 0 {
            self.invalid(
                &p,
                "`icmps` cannot be combined with `toPorts` in one rule",
                Some("write a separate rule for the ICMP part".into()),
            );
        }
    }

    fn authentication(&mut self, path: &str, a: &Authentication) {
        if !["disabled", "required", "test-always-fail"].contains(&a.mode.as_str()) {
            self.invalid_value(
                &join_key(path, "mode"),
                format!(
                    "authentication mode `{}` is not `disabled`, `required` or `test-always-fail`",
                    a.mode
                ),
                None,
            );
        }
        self.unsupported(path, "mutual authentication is not available in the lab");
    }

    /// A `fromCIDR`/`toCIDR` entry (a bare address is a /32 or /128), or with `need_prefix` a
    /// CIDR-set prefix (Cilium requires the `/len` there).
    fn cidr(&mut self, path: &str, text: &str, need_prefix: bool) -> Option<IpNet> {
        let example = Some(
            "write an address with a prefix length, such as `10.0.0.0/8` or `2001:db8::/32`"
                .to_owned(),
        );
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
            self.invalid_value(
                path,
                format!("`{text}` is not a valid CIDR: `{addr}` is not an IP address"),
                example,
            );
            return None;
        };
        let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
        let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
        let bits = match len {
            None if need_prefix => {
                self.invalid_value(
                    path,
                    format!("`{text}` needs a prefix length here"),
                    Some(format!("write `{text}/{max}` for a single address")),
                );
                return None;
            }
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(b) if b <= max && l.bytes().all(|c| c.is_ascii_digit()) => b,
                _ => {
                    self.invalid_value(path, format!("`{text}` is not a valid CIDR: the prefix length must be 0 to {max} for {family}"), example);
                    return None;
                }
            },
        };
        IpNet::new(ip, bits).ok()
    }

    fn cidr_rule(&mut self, path: &str, rule: &CidrRule) {
        if rule.cidr_group_ref.is_some() {
            self.unsupported(
                &join_key(path, "cidrGroupRef"),
                "write the prefixes inline with `cidr`",
            );
        }
        if rule.cidr_group_selector.is_some() {
            self.unsupported(
                &join_key(path, "cidrGroupSelector"),
                "write the prefixes inline with `cidr`",
            );
        }
        if rule.cidr.is_empty() {
            if rule.cidr_group_ref.is_none() && rule.cidr_group_selector.is_none() {
                self.invalid(
                    path,
                    "missing required field `cidr`",
                    Some("write `cidr: 10.0.0.0/8`".into()),
                );
            }
            return;
        }
        let Some(net) = self.cidr(&join_key(path, "cidr"), &rule.cidr, true) else {
            return;
        };
        let net = net.trunc();
        for (i, e) in rule.except.iter().flatten().enumerate() {
            let p = join_index(&join_key(path, "except"), i);
            let Some(ex) = self.cidr(&p, e, true) else {
                continue;
            };
            if !net.contains(&ex.trunc()) {
                self.invalid_value(
                    &p,
                    format!("`{e}` is not inside `{}`", rule.cidr),
                    Some(format!("`except` lists sub-ranges of `cidr` to leave out; each must lie within {net}")),
                );
            }
        }
    }

    /// Checks `ports`; returns the numeric ports' kinds for L7 checks.
    fn ports(&mut self, path: &str, ports: &Option<Vec<PortProtocol>>) -> Vec<PortKind> {
        let list = ports.as_deref().unwrap_or_default();
        if list.len() > MAX_PORTS {
            self.invalid(
                path,
                format!(
                    "{} ports in one entry; Cilium allows at most {MAX_PORTS}",
                    list.len()
                ),
                Some("split them over several `toPorts` entries".into()),
            );
        }
        list.iter()
            .enumerate()
            .map(|(i, pp)| self.port(&join_index(path, i), pp))
            .collect()
    }

    fn port(&mut self, path: &str, pp: &PortProtocol) -> PortKind {
        let pp_port = join_key(path, "port");
        let p = pp.port.as_str();
        let kind = if p.is_empty() {
            self.invalid_value(
                &pp_port,
                "`port` must not be empty",
                Some("write a port number; \"0\" means every port".into()),
            );
            PortKind::Invalid
        } else if p.bytes().all(|b| b.is_ascii_digit()) {
            match p.parse::<u32>() {
                Ok(n) if n <= 65535 => PortKind::Number(n as u16),
                _ => {
                    self.invalid_value(
                        &pp_port,
                        format!("port `{p}` is out of range"),
                        Some("ports are 0 to 65535; \"0\" means every port".into()),
                    );
                    PortKind::Invalid
                }
            }
        } else if names::is_port_name(p) {
            self.unsupported_msg(
                &pp_port,
                format!("named port `{p}` is valid Cilium {UNSUPPORTED_MARK}"),
                "write the port number instead",
            );
            PortKind::Named
        } else {
            self.invalid_value(
                &pp_port,
                format!("`{p}` is neither a port number (0 to 65535) nor a port name"),
                None,
            );
            PortKind::Invalid
        };
        if let Some(end) = pp.end_port.filter(|e| *e != 0) {
            let ep = join_key(path, "endPort");
            match kind {
                PortKind::Named => self.invalid(
                    &ep,
                    "`endPort` needs a numeric `port`",
                    Some("a range is `port: \"8000\"` with `endPort: 8080`".into()),
                ),
                PortKind::Number(0) => self.invalid(
                    &ep,
                    "`endPort` cannot be used with port \"0\" (which already means every port)",
                    Some("write the first port of the range in `port`".into()),
                ),
                PortKind::Number(n) if end < n => self.invalid_value(
                    &ep,
                    format!("`endPort` {end} is lower than `port` {n}"),
                    Some(format!(
                        "the range is port..=endPort, so endPort must be at least {n}"
                    )),
                ),
                _ => {}
            }
        }
        kind
    }

    fn port_rule(&mut self, path: &str, pr: &PortRule, dir: Dir) {
        let ports_path = join_key(path, "ports");
        let kinds = self.ports(&ports_path, &pr.ports);
        if let Some(rules) = &pr.rules {
            self.l7(
                &join_key(path, "rules"),
                rules,
                &ports_path,
                pr.ports.as_deref().unwrap_or_default(),
                &kinds,
                dir,
            );
        }
        if pr.server_names.is_some() {
            let p = join_key(path, "serverNames");
            for (i, s) in pr.server_names.iter().flatten().enumerate() {
                if s.is_empty() {
                    self.invalid_value(&join_index(&p, i), "a server name must not be empty", None);
                }
            }
            self.unsupported(&p, "TLS SNI matching is not available in the lab");
        }
        if pr.listener.is_some() {
            let p = join_key(path, "listener");
            if dir == Dir::Ingress {
                self.invalid(&p, "`listener` is not allowed on ingress", None);
            }
            self.unsupported(&p, "custom Envoy listeners do not exist in the lab");
        }
        if pr.originating_tls.is_some() {
            self.unsupported(
                &join_key(path, "originatingTLS"),
                "TLS interception is not available in the lab",
            );
        }
        if pr.terminating_tls.is_some() {
            self.unsupported(
                &join_key(path, "terminatingTLS"),
                "TLS interception is not available in the lab",
            );
        }
    }

    fn l7(
        &mut self,
        path: &str,
        rules: &L7Rules,
        ports_path: &str,
        ports: &[PortProtocol],
        kinds: &[PortKind],
        dir: Dir,
    ) {
        let present: Vec<&str> = [
            ("http", rules.http.is_some()),
            ("kafka", rules.kafka.is_some()),
            ("dns", rules.dns.is_some()),
            ("l7proto", rules.l7proto.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, p)| p.then_some(n))
        .collect();
        if present.len() > 1 {
            self.invalid(
                &join_key(path, present[1]),
                format!(
                    "`{}` and `{}` rules cannot share one toPorts entry",
                    present[0], present[1]
                ),
                Some("write one toPorts entry per L7 protocol".into()),
            );
        }
        if rules.l7.is_some() && rules.l7proto.is_none() {
            self.invalid(&join_key(path, "l7"), "`l7` needs `l7proto`", None);
        }
        if rules.kafka.is_some() {
            self.unsupported(
                &join_key(path, "kafka"),
                "only HTTP L7 rules are implemented",
            );
        }
        if rules.l7proto.is_some() {
            self.unsupported(
                &join_key(path, "l7proto"),
                "only HTTP L7 rules are implemented",
            );
        }
        if rules.dns.is_some() {
            let p = join_key(path, "dns");
            if dir == Dir::Ingress {
                self.invalid(&p, "DNS rules are only allowed on egress", None);
            } else {
                self.unsupported(
                    &p,
                    "the lab has no DNS proxy; only HTTP L7 rules are implemented",
                );
            }
        }
        let Some(http) = &rules.http else { return };
        // Cilium: L7 rules need explicit ports, TCP (or any protocol), and no port 0.
        if ports.is_empty() {
            self.invalid(
                path,
                "L7 rules need explicit ports",
                Some("add `ports: [{port: \"80\", protocol: TCP}]` to this toPorts entry".into()),
            );
        }
        for (i, (pp, kind)) in ports.iter().zip(kinds).enumerate() {
            let pp_path = join_index(ports_path, i);
            if let Some(proto @ (Protocol::Udp | Protocol::Sctp)) = pp.protocol {
                self.invalid_value(
                    &join_key(&pp_path, "protocol"),
                    format!("HTTP rules apply only to TCP, but this port is {proto}"),
                    Some("use `protocol: TCP`, or move the HTTP rules to a toPorts entry for TCP ports".into()),
                );
            }
            if *kind == PortKind::Number(0) {
                self.invalid_value(
                    &join_key(&pp_path, "port"),
                    "L7 rules cannot be used with port \"0\" (every port)",
                    Some("name the port the HTTP server listens on".into()),
                );
            }
        }
        for (i, rule) in http.iter().enumerate() {
            let p = join_index(&join_key(path, "http"), i);
            for (field, value) in [
                ("method", &rule.method),
                ("path", &rule.path),
                ("host", &rule.host),
            ] {
                if let Some(re) = value
                    && let Err(e) = regex::Regex::new(&format!("^(?:{re})$"))
                {
                    let detail = e.to_string();
                    let detail = detail
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("")
                        .trim()
                        .trim_start_matches("error: ");
                    self.invalid_value(
                        &join_key(&p, field),
                        format!("`{field}` is not a valid regular expression: {detail}"),
                        Some(format!("`{field}` is a regular expression matched against the whole {field}; escape special characters with `\\`")),
                    );
                }
            }
            for (j, h) in rule.headers.iter().flatten().enumerate() {
                let hp = join_index(&join_key(&p, "headers"), j);
                let name = h.split_once(':').map_or(h.as_str(), |(n, _)| n).trim();
                if h.trim().is_empty() {
                    self.invalid_value(
                        &hp,
                        "a header entry must not be empty",
                        Some(
                            "write `Name` (must be present) or `Name: value` (must be equal)"
                                .into(),
                        ),
                    );
                } else if name.is_empty() || !name.bytes().all(is_token_char) {
                    self.invalid_value(
                        &hp,
                        format!("`{name}` is not a valid HTTP header name"),
                        Some(
                            "write `Name` (must be present) or `Name: value` (must be equal)"
                                .into(),
                        ),
                    );
                }
            }
            if rule.header_matches.is_some() {
                self.unsupported(
                    &join_key(&p, "headerMatches"),
                    "use `headers` with `Name` or `Name: value` entries",
                );
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortKind {
    Number(u16),
    Named,
    Invalid,
}

fn len<T>(list: &Option<Vec<T>>) -> usize {
    list.as_ref().map_or(0, Vec::len)
}

/// RFC 9110 token characters (header names).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<PolicyDoc>, Vec<Located>> {
        parse_policies(&Source::new("p.yaml", text))
    }

    const MINIMAL: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\nspec:\n  endpointSelector: {}\n";

    #[test]
    fn defaults() {
        let p = &parse(MINIMAL).unwrap()[0];
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
        let text = MINIMAL.replace(
            "  name: p\n",
            "  name: p\n  annotations:\n    policy.lab.dev/audit-mode: \"true\"\n",
        );
        assert!(parse(&text).unwrap()[0].audit_mode());
        let text = MINIMAL.replace(
            "  name: p\n",
            "  name: p\n  annotations:\n    policy.lab.dev/audit-mode: \"yes\"\n",
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e[0].line, 6);
    }

    #[test]
    fn end_port_zero_is_absent() {
        let text = format!(
            "{MINIMAL}  ingress:\n  - toPorts:\n    - ports:\n      - port: 80\n        endPort: 0\n"
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
    fn rule_labels_in_both_forms() {
        let text = format!("{MINIMAL}  labels:\n  - k8s:team=a\n  - {{key: b, value: c}}\n");
        let p = &parse(&text).unwrap()[0];
        let l = p.rules[0].labels.as_ref().unwrap();
        assert_eq!(
            l[0],
            RuleLabel {
                key: "team".into(),
                value: "a".into(),
                source: "k8s".into()
            }
        );
        assert_eq!(
            l[1],
            RuleLabel {
                key: "b".into(),
                value: "c".into(),
                source: "unspec".into()
            }
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
            format!("{MINIMAL}specs:\n- endpointSelector: {{}}\n  ingress:\n  - toPorts: []\n");
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
            "p.yaml:10:5: specs[0].ingress[0].toPorts: named ports are unsupported"
        );
    }

    #[test]
    fn duplicate_names_in_one_file() {
        let e = parse(&format!("{MINIMAL}---\n{MINIMAL}")).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 11);
        assert!(e[0].message.contains("defined twice"), "{}", e[0]);
    }
}
