//! The four kinds of rule — ingress and egress, allow and deny — seen in one shape
//! ([`RuleView`]), so that code checking or converting rules is written once rather than four
//! times. Cilium's types name the same fields `fromX` at ingress and `toX` at egress.

use serde_json::Value;

use super::{
    Authentication, CidrRule, EgressDenyRule, EgressRule, EndpointSelector, Entity, FqdnSelector,
    IcmpRule, IngressDenyRule, IngressRule, PortDenyRule, PortRule, Rule,
};

/// Which way a rule looks: at ingress its peers are the sources, at egress the destinations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Ingress,
    Egress,
}

impl Dir {
    /// A peer field's name: `fromX` at ingress, `toX` at egress.
    pub fn peer(self, what: &str) -> String {
        match self {
            Dir::Ingress => format!("from{what}"),
            Dir::Egress => format!("to{what}"),
        }
    }
}

/// The `toPorts` of an allow rule (ports and L7 rules) or of a deny rule (ports only).
#[derive(Clone, Copy, Debug)]
pub enum ToPorts<'a> {
    Allow(&'a Option<Vec<PortRule>>),
    Deny(&'a Option<Vec<PortDenyRule>>),
}

impl ToPorts<'_> {
    /// How many `toPorts` entries there are.
    pub fn count(self) -> usize {
        match self {
            ToPorts::Allow(list) => list.as_ref().map_or(0, Vec::len),
            ToPorts::Deny(list) => list.as_ref().map_or(0, Vec::len),
        }
    }
}

/// One rule of any of the four kinds. A field the kind does not have is `None`: `toServices`
/// exists at egress only, `toFQDNs` in egress allow rules only, `authentication` in allow rules
/// only.
#[derive(Clone, Copy, Debug)]
pub struct RuleView<'a> {
    pub dir: Dir,
    pub deny: bool,
    pub endpoints: &'a Option<Vec<EndpointSelector>>,
    pub requires: &'a Option<Vec<EndpointSelector>>,
    pub cidr: &'a Option<Vec<String>>,
    pub cidr_set: &'a Option<Vec<CidrRule>>,
    pub entities: &'a Option<Vec<Entity>>,
    pub groups: &'a Option<Vec<Value>>,
    pub nodes: &'a Option<Vec<EndpointSelector>>,
    pub services: Option<&'a Option<Vec<Value>>>,
    pub fqdns: Option<&'a Option<Vec<FqdnSelector>>>,
    pub to_ports: ToPorts<'a>,
    pub icmps: &'a Option<Vec<IcmpRule>>,
    pub authentication: Option<&'a Authentication>,
}

impl RuleView<'_> {
    /// The rule's list in a [`Rule`]: `ingress`, `ingressDeny`, `egress` or `egressDeny`.
    pub fn section(&self) -> &'static str {
        match (self.dir, self.deny) {
            (Dir::Ingress, false) => "ingress",
            (Dir::Ingress, true) => "ingressDeny",
            (Dir::Egress, false) => "egress",
            (Dir::Egress, true) => "egressDeny",
        }
    }
}

impl Rule {
    /// Every ingress and egress rule, allow and deny, with its index in its list; in the order
    /// `ingress`, `ingressDeny`, `egress`, `egressDeny`.
    pub fn peer_rules(&self) -> impl Iterator<Item = (usize, RuleView<'_>)> {
        let ingress = self.ingress.iter().flatten().map(IngressRule::view);
        let ingress_deny = self
            .ingress_deny
            .iter()
            .flatten()
            .map(IngressDenyRule::view);
        let egress = self.egress.iter().flatten().map(EgressRule::view);
        let egress_deny = self.egress_deny.iter().flatten().map(EgressDenyRule::view);
        (ingress.enumerate())
            .chain(ingress_deny.enumerate())
            .chain(egress.enumerate())
            .chain(egress_deny.enumerate())
    }
}

/// The peer fields of an ingress rule, allow or deny (both name them alike).
macro_rules! ingress_view {
    ($r:expr, $deny:expr, $to_ports:expr, $authentication:expr) => {
        RuleView {
            dir: Dir::Ingress,
            deny: $deny,
            endpoints: &$r.from_endpoints,
            requires: &$r.from_requires,
            cidr: &$r.from_cidr,
            cidr_set: &$r.from_cidr_set,
            entities: &$r.from_entities,
            groups: &$r.from_groups,
            nodes: &$r.from_nodes,
            services: None,
            fqdns: None,
            to_ports: $to_ports,
            icmps: &$r.icmps,
            authentication: $authentication,
        }
    };
}

/// The peer fields of an egress rule, allow or deny (both name them alike).
macro_rules! egress_view {
    ($r:expr, $deny:expr, $fqdns:expr, $to_ports:expr, $authentication:expr) => {
        RuleView {
            dir: Dir::Egress,
            deny: $deny,
            endpoints: &$r.to_endpoints,
            requires: &$r.to_requires,
            cidr: &$r.to_cidr,
            cidr_set: &$r.to_cidr_set,
            entities: &$r.to_entities,
            groups: &$r.to_groups,
            nodes: &$r.to_nodes,
            services: Some(&$r.to_services),
            fqdns: $fqdns,
            to_ports: $to_ports,
            icmps: &$r.icmps,
            authentication: $authentication,
        }
    };
}

impl IngressRule {
    pub fn view(&self) -> RuleView<'_> {
        let ports = ToPorts::Allow(&self.to_ports);
        ingress_view!(self, false, ports, self.authentication.as_ref())
    }
}

impl IngressDenyRule {
    pub fn view(&self) -> RuleView<'_> {
        ingress_view!(self, true, ToPorts::Deny(&self.to_ports), None)
    }
}

impl EgressRule {
    pub fn view(&self) -> RuleView<'_> {
        let ports = ToPorts::Allow(&self.to_ports);
        egress_view!(
            self,
            false,
            Some(&self.to_fqdns),
            ports,
            self.authentication.as_ref()
        )
    }
}

impl EgressDenyRule {
    pub fn view(&self) -> RuleView<'_> {
        egress_view!(self, true, None, ToPorts::Deny(&self.to_ports), None)
    }
}
