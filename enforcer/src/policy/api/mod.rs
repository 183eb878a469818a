//! The policies users write: Cilium's `cilium.io/v2` `CiliumNetworkPolicy` and
//! `CiliumClusterwideNetworkPolicy`, parsed and validated. This layer knows nothing of
//! identities, endpoints or BPF maps; resolution works from the types defined here.
//!
//! - [`parse_policies`]: a [`Source`](crate::yaml::Source) → every [`PolicyDoc`] in it, or every error in it.
//! - [`check_policies`]: the same, but keeps the policies that are valid Cilium while listing all
//!   problems (for the web editor and `lab policy check`).
//! - [`parse_policy_document`]: one already-parsed [`Document`](crate::yaml::Document).
//!
//! The types mirror Cilium's API field for field (camelCase in YAML, unknown fields are errors).
//! Lists stay `Option<Vec<_>>` because Cilium gives an absent list and an empty list different
//! meanings (`ingress: []` versus no `ingress`; `fromEndpoints: []` selects nothing).
//!
//! Features that are valid Cilium but that the lab does not implement are parsed (so their
//! syntax is still checked) and then reported as errors of kind [`ErrorKind::Unsupported`](crate::yaml::ErrorKind::Unsupported)
//! saying "… is valid Cilium but not supported by the lab yet" — never silently ignored: `toFQDNs`,
//! `toServices`, `toGroups`/`fromGroups`, `toNodes`/`fromNodes`, `nodeSelector`,
//! `authentication`, `serverNames`, `listener`, `originatingTLS`, `terminatingTLS`,
//! `headerMatches`, `kafka`/`dns`/`l7proto` rules, named ports.
//!
//! `icmps` (ICMP types by number or by Cilium's names, see `icmp`) and the port-less protocols
//! of the CRD (VRRP, IGMP, GRE, IPIP, IPV6, ESP, AH) are enforced as in Cilium.
//!
//! CIDR-set entries may name `CiliumCIDRGroup` objects (`cidrGroupRef`, `cidrGroupSelector`):
//! the groups are their own kind ([`crate::policy::cidrgroup`]), resolved with the policies.
//!
//! What the API server refuses (the CRD's `openAPIV3Schema`) or Cilium's own checks refuse, the
//! lab refuses as invalid, with the fix: a port written as a number, a rule without
//! `ingress`/`ingressDeny`/`egress`/`egressDeny`, empty `rules`, L7 rules on anything but TCP,
//! a bare address as a CIDR, entities outside the CRD's enum, rule labels as strings, entries in
//! the deprecated `fromRequires`/`toRequires`, protocol ICMP in `toPorts`, an unquoted `yes`/`on`
//! (a boolean for kubectl) where a string belongs. `tests/corpus.rs` holds the lab to the CRD's
//! schema.
//!
//! Lab extension: the annotation `policy.lab.dev/audit-mode: "true"` puts one policy in audit
//! mode (would-be drops it causes are reported with verdict AUDIT and forwarded). Cilium only has
//! audit mode per agent or per endpoint; users have long asked for it per policy.
//!
//! One file per job: `types` and `ports` (the types), `icmp` (ICMP types and their names),
//! `peers` (the four kinds of rule in one shape), `parse` (documents → policies) and
//! `validate` (Cilium's semantic checks).

mod icmp;
pub mod netpol;
mod parse;
mod peers;
mod ports;
mod types;
mod validate;

pub(crate) use validate::check_cidr;

pub use icmp::{ICMPV4_TYPES, ICMPV6_TYPES, IcmpFamily, TypeProblem, icmp_type, icmpv4_type_name};
pub use parse::{
    PolicyCheck, check_policies, check_policy_document, parse_policies, parse_policy_document,
};
pub use peers::{Dir, RuleView, ToPorts};
pub use ports::{HttpRule, L7Rules, PortDenyRule, PortProtocol, PortRule, Protocol};
pub use types::{
    Authentication, CidrRule, DefaultDeny, EgressDenyRule, EgressRule, EndpointSelector, Entity,
    FqdnSelector, IcmpField, IcmpRule, IngressDenyRule, IngressRule, LabelSelectorRequirement,
    Operator, PolicyDoc, PolicyKind, Rule, RuleLabel,
};

/// The `apiVersion` of Cilium's kinds (Kubernetes `NetworkPolicy`: [`netpol::API_VERSION`]).
pub const API_VERSION: &str = "cilium.io/v2";

/// The lab's per-policy audit annotation (see the module documentation).
pub const AUDIT_ANNOTATION: &str = "policy.lab.dev/audit-mode";

/// The most ports one `toPorts` entry may list (Cilium's limit).
pub const MAX_PORTS: usize = 40;

/// The most types one `icmps` entry may list (the CRD's and Cilium's limit).
pub const MAX_ICMP_FIELDS: usize = 40;
