//! Policy resolution: from normalised rules and the identities that exist now, to the distilled
//! per-endpoint map state the datapath looks up — the lab's equivalent of Cilium's selector
//! cache and `MapState`.
//!
//! Keys are (endpoint, peer identity, direction, protocol, port prefix). Selectors are expanded
//! to the identities they select, so the datapath needs exactly one LPM lookup and never loops
//! over rules. Precedence is settled here, before anything is written:
//! * contributions to the same key merge: deny beats allow; an L4-only allow beats an L7
//!   redirect (it lifts the L7 restriction, as in Cilium); L7 rules of redirects are unioned;
//! * a deny also covers every more specific key under it (a denied port range beats an allowed
//!   port inside it), because the kernel's longest-prefix match alone would pick the allow;
//! * each key is resolved twice: for the enforced policies and for all policies including
//!   those in audit mode (the "would-be" verdict the datapath reports as AUDIT).
//!
//! Everything here is in host byte order with plain Rust types ([`MapKey`], [`MapValue`]);
//! [`crate::datapath`] encodes them for the kernel.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use enforcer_common::{DIR_EGRESS, DIR_INGRESS, POLICY_KEY_FIXED_BITS, POLICY_KEY_FULL_BITS};

use crate::identity::{Identity, IdentityKind, LabelSet};

/// Matches a set of labels; implemented by endpoint selectors.
pub trait LabelMatcher: Send + Sync + std::fmt::Debug {
    fn matches(&self, labels: &LabelSet) -> bool;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn code(self) -> u8 {
        match self {
            Direction::Ingress => DIR_INGRESS,
            Direction::Egress => DIR_EGRESS,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// One key of the policy map: the endpoint whose policy it is, the peer identity, the direction,
/// and a protocol and destination-port prefix. `prefix_len` counts the leading bits of the
/// kernel's key that must match, as its LPM trie does: [`POLICY_KEY_FIXED_BITS`] (endpoint,
/// identity, direction) matches every protocol and port, 8 more bits one protocol, and up to 16
/// more a block of ports. Bits beyond the prefix are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MapKey {
    pub endpoint: u32,
    pub identity: u32,
    pub direction: Direction,
    /// IP protocol number (0 when the prefix leaves it out).
    pub protocol: u8,
    /// First port of the block (0 when the prefix leaves it out). For ICMP (protocol 1) the
    /// ICMP type, as Cilium keys `icmps` rules.
    pub port: u16,
    pub prefix_len: u32,
}

impl MapKey {
    /// The key of one protocol and port: what a packet looks up.
    pub fn exact(
        endpoint: u32,
        identity: u32,
        direction: Direction,
        protocol: u8,
        port: u16,
    ) -> Self {
        Self {
            endpoint,
            identity,
            direction,
            protocol,
            port,
            prefix_len: POLICY_KEY_FULL_BITS,
        }
    }

    /// How many bits of the port the key matches; `None` when it matches every protocol.
    pub fn port_bits(&self) -> Option<u32> {
        (self.prefix_len >= POLICY_KEY_FIXED_BITS + 8)
            .then(|| self.prefix_len - POLICY_KEY_FIXED_BITS - 8)
    }

    /// This key and every less specific key covering it, most specific first: the entries
    /// the kernel's longest-prefix match would fall back to.
    pub fn covering(self) -> impl Iterator<Item = MapKey> {
        (POLICY_KEY_FIXED_BITS..=self.prefix_len)
            .rev()
            // Only the lengths keys are ever written with: fixed, +proto, +proto+port bits.
            .filter(|&p| p == POLICY_KEY_FIXED_BITS || p >= POLICY_KEY_FIXED_BITS + 8)
            .map(move |p| self.truncated(p))
    }

    /// The same key cut to `prefix_len` bits (the bits beyond it zeroed).
    fn truncated(self, prefix_len: u32) -> Self {
        if prefix_len < POLICY_KEY_FIXED_BITS + 8 {
            return Self {
                protocol: 0,
                port: 0,
                prefix_len,
                ..self
            };
        }
        let port_bits = prefix_len - POLICY_KEY_FIXED_BITS - 8;
        let mask = if port_bits == 0 {
            0
        } else {
            u16::MAX << (16 - port_bits)
        };
        Self {
            port: self.port & mask,
            prefix_len,
            ..self
        }
    }
}

/// What the datapath does with a packet whose key matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// No rule of the policy set matched: the endpoint's default for the direction applies.
    #[default]
    None,
    Allow,
    Deny,
    /// Allowed at L3/L4, but HTTP must be judged by the L7 proxy.
    Redirect,
}

/// The value of a policy map entry: the verdicts of the enforced and of the would-be policy
/// sets (audit-mode policies included), and the rules that decided them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MapValue {
    pub verdict: Verdict,
    pub audit_verdict: Verdict,
    /// Port of the L7 proxy's listener when `verdict` is [`Verdict::Redirect`], else 0.
    pub proxy_port: u16,
    /// Index into the rule table of the rule that decided `verdict` (0: none).
    pub rule_ref: u32,
    /// The same for `audit_verdict`.
    pub audit_rule_ref: u32,
}

/// Cilium's entities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntityKind {
    All,
    World,
    Cluster,
    Host,
    RemoteNode,
    KubeApiserver,
    Ingress,
    Init,
    Health,
    Unmanaged,
    None,
}

/// A CIDR peer: the prefix and the prefixes carved out of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrPeer {
    pub prefix: (std::net::Ipv4Addr, u8),
    pub except: Vec<(std::net::Ipv4Addr, u8)>,
}

/// Who a rule applies to on the other side.
#[derive(Debug, Clone)]
pub enum Peers {
    /// No peer restriction (a rule with only `toPorts`): every identity.
    Any,
    Select {
        endpoints: Vec<Arc<dyn LabelMatcher>>,
        cidrs: Vec<CidrPeer>,
        entities: Vec<EntityKind>,
    },
}

/// One port entry: IP protocol number and an inclusive port range; `0..=65535` means every
/// port. An ICMP type `t` of an `icmps` rule is `{proto: 1, first: t, last: t}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub proto: u8,
    pub first: u16,
    pub last: u16,
}

/// A container port a pod declares with a name (`containerPorts[].name`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct NamedPort {
    pub name: String,
    /// IP protocol number (6, 17, 132).
    pub proto: u8,
    pub port: u16,
}

/// A port given by name in a rule: resolved per endpoint, as Cilium does. At ingress the name
/// is looked up in the selected pod's own ports; at egress in the ports of every pod of the
/// cluster (Cilium's named-port multimap), since the peer may be any of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortName {
    pub name: String,
    /// The protocols the rule allows the name on (a name is declared for one protocol).
    pub protos: Vec<u8>,
}

/// An L7 HTTP rule as written, with the reference of the rule it came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HttpSpec {
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub headers: Vec<String>,
    pub rule_ref: u32,
}

/// A rule after normalisation: one direction, one selected subject, flat peers and ports.
#[derive(Debug)]
pub struct NormRule {
    /// Index into the caller's rule table (flows name the rule by it); never 0.
    pub rule_ref: u32,
    /// From a policy in audit mode: counts only for the would-be verdict.
    pub audit: bool,
    pub subject: Arc<dyn LabelMatcher>,
    pub direction: Direction,
    pub deny: bool,
    pub peers: Peers,
    /// `None`: all protocols and ports (an L3-only rule).
    pub ports: Option<Vec<PortRange>>,
    /// Ports given by name, resolved per endpoint into more `ports` (only with `ports: Some`).
    pub port_names: Vec<PortName>,
    /// L7 rules (allow rules with explicit TCP ports only).
    pub http: Option<Vec<HttpSpec>>,
    /// Whether the rule switches its direction to default deny for the subject.
    pub default_deny: bool,
}

/// A connection limit after normalisation.
#[derive(Debug)]
pub struct NormLimit {
    /// Index into the rule table (flows name the limit by it).
    pub limit_ref: u32,
    pub subject: Arc<dyn LabelMatcher>,
    /// `None`: every peer is limited; else only peers these select.
    pub peers: Option<Vec<Arc<dyn LabelMatcher>>>,
    pub port: u16,
    pub max: u32,
    pub per_identity: bool,
}

/// The `CONN_LIMITS` entries for `limits`: (endpoint, peer identity, port) → (max, bucket, ref).
pub fn resolve_limits(
    limits: &[NormLimit],
    endpoints: &[EndpointRef],
    identities: &[&Identity],
) -> BTreeMap<enforcer_common::LimitKey, enforcer_common::LimitValue> {
    let mut out = BTreeMap::new();
    for l in limits {
        let peers: Vec<u32> = identities
            .iter()
            .filter(|i| match &l.peers {
                None => true,
                Some(sels) => {
                    selectable_by_endpoints(i) && sels.iter().any(|s| s.matches(&i.labels))
                }
            })
            .map(|i| i.id)
            .collect();
        for ep in endpoints.iter().filter(|e| l.subject.matches(&e.labels)) {
            for &peer in &peers {
                let key = enforcer_common::LimitKey {
                    ep_id: ep.ep_id,
                    identity: peer,
                    port: l.port,
                    _pad: 0,
                };
                let value = enforcer_common::LimitValue {
                    max: l.max,
                    bucket: if l.per_identity { peer } else { 0 },
                    limit_ref: l.limit_ref,
                };
                // Two limits on one port: the stricter wins.
                out.entry(key)
                    .and_modify(|v: &mut enforcer_common::LimitValue| {
                        if value.max < v.max {
                            *v = value;
                        }
                    })
                    .or_insert(value);
            }
        }
    }
    out
}

/// An endpoint as resolution sees it.
#[derive(Clone, Debug)]
pub struct EndpointRef {
    pub ep_id: u32,
    pub labels: LabelSet,
    pub named_ports: Arc<Vec<NamedPort>>,
}

/// The result of resolution for all endpoints.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Resolved {
    /// The POLICY map.
    pub map: BTreeMap<MapKey, MapValue>,
    /// Endpoint flags (`EP_*`) by endpoint id.
    pub flags: BTreeMap<u32, u32>,
    /// L7 rules of enforced redirects, by the key of their entry: one port, or an aligned
    /// block of ports when the rules are on a port range. The proxy finds them from a
    /// connection's exact key with [`MapKey::covering`], as the kernel's LPM lookup does.
    pub http: BTreeMap<MapKey, Vec<HttpSpec>>,
    /// Entries that are not redirects under a less specific one that is (an L4-only allow on
    /// one port of an L7 port range, say): the proxy's lookup stops at them, as the kernel's
    /// does, so the range's HTTP rules do not apply there.
    pub l7_shadowed: BTreeSet<MapKey>,
    /// Which rules select which endpoint, by direction: (ep, dir) → rule refs that enable
    /// default deny. Used to explain default-deny drops.
    pub enforcers: BTreeMap<(u32, u8), Vec<u32>>,
}

impl Resolved {
    /// The enforced verdict for one packet, as the datapath reaches it: the longest matching
    /// key, and the endpoint's default for the direction when none decides (deny when a rule
    /// selects it for that direction). Returns the verdict and the deciding rule (0: none, or
    /// default deny; see [`Resolved::enforcers`]).
    pub fn decide(
        &self,
        ep: u32,
        peer: u32,
        direction: Direction,
        proto: u8,
        port: u16,
    ) -> (Verdict, u32) {
        let hit = MapKey::exact(ep, peer, direction, proto, port)
            .covering()
            .find_map(|k| self.map.get(&k));
        match hit {
            Some(v) if v.verdict != Verdict::None => (v.verdict, v.rule_ref),
            _ => {
                let bit = match direction {
                    Direction::Ingress => enforcer_common::EP_INGRESS_ENFORCED,
                    Direction::Egress => enforcer_common::EP_EGRESS_ENFORCED,
                };
                let flags = self.flags.get(&ep).copied().unwrap_or(0);
                if flags & bit != 0 {
                    (Verdict::Deny, 0)
                } else {
                    (Verdict::Allow, 0)
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Contribution {
    Deny(u32),
    Allow(u32),
    Redirect(u32, Vec<HttpSpec>),
}

/// What one set of rules says about one key.
#[derive(Clone, Debug, Default, PartialEq)]
struct KeyState {
    deny: Option<u32>,
    allow: Option<u32>,
    redirect: Option<(u32, BTreeSet<HttpSpec>)>,
}

impl KeyState {
    fn add(&mut self, c: Contribution) {
        match c {
            Contribution::Deny(r) => {
                self.deny.get_or_insert(r);
            }
            Contribution::Allow(r) => {
                self.allow.get_or_insert(r);
            }
            Contribution::Redirect(r, specs) => {
                let e = self.redirect.get_or_insert((r, BTreeSet::new()));
                e.1.extend(specs);
            }
        }
    }
    /// (verdict, rule) of this key alone.
    fn verdict(&self) -> (Verdict, u32) {
        if let Some(r) = self.deny {
            (Verdict::Deny, r)
        } else if let Some(r) = self.allow {
            (Verdict::Allow, r)
        } else if let Some((r, _)) = &self.redirect {
            (Verdict::Redirect, *r)
        } else {
            (Verdict::None, 0)
        }
    }
}

/// Resolves `rules` for `endpoints` against every identity that exists.
pub fn resolve(
    rules: &[NormRule],
    endpoints: &[EndpointRef],
    identities: &[&Identity],
    proxy_port: u16,
) -> Resolved {
    let mut out = Resolved::default();
    // Peer expansion depends only on the rule: do it once per rule, not per endpoint.
    let peer_sets: Vec<BTreeSet<u32>> = rules
        .iter()
        .map(|r| select_peers(&r.peers, identities))
        .collect();
    let cluster_ports: BTreeSet<&NamedPort> = endpoints
        .iter()
        .flat_map(|e| e.named_ports.iter())
        .collect();

    for ep in endpoints {
        let mut enforced: BTreeMap<MapKey, KeyState> = BTreeMap::new();
        let mut would: BTreeMap<MapKey, KeyState> = BTreeMap::new();
        let mut flags = 0u32;
        for (rule, peers) in rules.iter().zip(&peer_sets) {
            if !rule.subject.matches(&ep.labels) {
                continue;
            }
            if rule.default_deny {
                let (e_bit, w_bit) = match rule.direction {
                    Direction::Ingress => (
                        enforcer_common::EP_INGRESS_ENFORCED,
                        enforcer_common::EP_INGRESS_WOULD_ENFORCE,
                    ),
                    Direction::Egress => (
                        enforcer_common::EP_EGRESS_ENFORCED,
                        enforcer_common::EP_EGRESS_WOULD_ENFORCE,
                    ),
                };
                flags |= w_bit;
                if !rule.audit {
                    flags |= e_bit;
                }
                out.enforcers
                    .entry((ep.ep_id, rule.direction.code()))
                    .or_default()
                    .push(rule.rule_ref);
            }
            let contribution = if rule.deny {
                Contribution::Deny(rule.rule_ref)
            } else if let Some(http) = &rule.http {
                Contribution::Redirect(rule.rule_ref, http.clone())
            } else {
                Contribution::Allow(rule.rule_ref)
            };
            let named;
            let ports = if rule.port_names.is_empty() {
                rule.ports.as_deref()
            } else {
                named = with_named_ports(rule, ep, &cluster_ports);
                Some(named.as_slice())
            };
            for &peer in peers {
                for key in keys_for(ep.ep_id, peer, rule.direction, ports) {
                    would.entry(key).or_default().add(contribution.clone());
                    if !rule.audit {
                        enforced.entry(key).or_default().add(contribution.clone());
                    }
                }
            }
        }
        out.flags.insert(ep.ep_id, flags);

        let all_keys: BTreeSet<MapKey> = enforced.keys().chain(would.keys()).copied().collect();
        let mut any_redirect = false;
        for &k in &all_keys {
            let (verdict, rule_ref, http) = settle(&enforced, k);
            let (audit_verdict, audit_rule_ref, _) = settle(&would, k);
            if verdict == Verdict::Redirect
                && let Some(h) = http
            {
                out.http.insert(k, h);
                any_redirect = true;
            }
            out.map.insert(
                k,
                MapValue {
                    verdict,
                    audit_verdict,
                    proxy_port: if verdict == Verdict::Redirect {
                        proxy_port
                    } else {
                        0
                    },
                    rule_ref,
                    audit_rule_ref,
                },
            );
        }
        // Only an endpoint with redirects can have entries shadowing one.
        if any_redirect {
            for k in all_keys {
                let redirect = out
                    .map
                    .get(&k)
                    .is_some_and(|v| v.verdict == Verdict::Redirect);
                if !redirect && k.covering().skip(1).any(|c| out.http.contains_key(&c)) {
                    out.l7_shadowed.insert(k);
                }
            }
        }
    }
    out
}

/// A rule's numeric ports plus its named ports as they resolve for endpoint `ep`: at ingress
/// from `ep`'s own ports, at egress from every pod's (`cluster`). A name nobody declares adds
/// nothing.
fn with_named_ports(
    rule: &NormRule,
    ep: &EndpointRef,
    cluster: &BTreeSet<&NamedPort>,
) -> Vec<PortRange> {
    let mut out = rule.ports.clone().unwrap_or_default();
    let declared: Vec<&NamedPort> = match rule.direction {
        Direction::Ingress => ep.named_ports.iter().collect(),
        Direction::Egress => cluster.iter().copied().collect(),
    };
    for wanted in &rule.port_names {
        for np in &declared {
            if np.name == wanted.name && wanted.protos.contains(&np.proto) {
                let range = PortRange {
                    proto: np.proto,
                    first: np.port,
                    last: np.port,
                };
                if !out.contains(&range) {
                    out.push(range);
                }
            }
        }
    }
    out
}

/// The verdict at key `k` given one set: a deny at `k` or at any less specific key covering it
/// wins; otherwise the most specific key at or above `k` decides.
fn settle(set: &BTreeMap<MapKey, KeyState>, k: MapKey) -> (Verdict, u32, Option<Vec<HttpSpec>>) {
    let mut most_specific: Option<&KeyState> = None;
    let mut deny: Option<u32> = None;
    for key in k.covering() {
        if let Some(state) = set.get(&key) {
            if most_specific.is_none() {
                most_specific = Some(state);
            }
            if deny.is_none() {
                deny = state.deny;
            }
        }
    }
    if let Some(r) = deny {
        return (Verdict::Deny, r, None);
    }
    match most_specific {
        None => (Verdict::None, 0, None),
        Some(state) => {
            let (v, r) = state.verdict();
            // A redirect takes the HTTP rules of every redirect covering it too (an L7 rule on
            // port 80 and one on the range 80-90): L7 rules on the same traffic are unioned.
            let http = state.redirect.as_ref().map(|_| {
                let all: BTreeSet<&HttpSpec> = k
                    .covering()
                    .filter_map(|c| set.get(&c)?.redirect.as_ref())
                    .flat_map(|(_, specs)| specs)
                    .collect();
                all.into_iter().cloned().collect()
            });
            (v, r, http)
        }
    }
}

/// The LPM keys for one (endpoint, peer, direction) and a port list.
fn keys_for(ep: u32, peer: u32, direction: Direction, ports: Option<&[PortRange]>) -> Vec<MapKey> {
    let base = MapKey {
        endpoint: ep,
        identity: peer,
        direction,
        protocol: 0,
        port: 0,
        prefix_len: POLICY_KEY_FIXED_BITS,
    };
    let Some(ports) = ports else {
        return vec![base];
    };
    let mut out = Vec::new();
    for pr in ports {
        for (start, bits) in range_to_prefixes(pr.first, pr.last) {
            out.push(MapKey {
                protocol: pr.proto,
                port: start,
                prefix_len: POLICY_KEY_FIXED_BITS + 8 + bits,
                ..base
            });
        }
    }
    out
}

/// Splits an inclusive port range into aligned blocks: (first port, prefix bits of 16).
pub fn range_to_prefixes(first: u16, last: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(first), u32::from(last));
    while lo <= hi {
        // The largest block starting at `lo` that is aligned and fits in the range.
        let mut size = if lo == 0 {
            1 << 16
        } else {
            lo & lo.wrapping_neg()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push((lo as u16, 16 - size.trailing_zeros()));
        lo += size;
    }
    out
}

/// The identities a peer specification selects.
fn select_peers(peers: &Peers, identities: &[&Identity]) -> BTreeSet<u32> {
    match peers {
        Peers::Any => identities.iter().map(|i| i.id).collect(),
        Peers::Select {
            endpoints,
            cidrs,
            entities,
        } => {
            let mut out = BTreeSet::new();
            for i in identities {
                let selected = endpoints
                    .iter()
                    .any(|m| selectable_by_endpoints(i) && m.matches(&i.labels))
                    || cidrs.iter().any(|c| cidr_selects(c, i))
                    || entities.iter().any(|e| entity_selects(*e, i));
                if selected {
                    out.insert(i.id);
                }
            }
            out
        }
    }
}

/// Endpoint selectors select pods and reserved identities, never CIDR identities.
fn selectable_by_endpoints(i: &Identity) -> bool {
    !matches!(i.kind, IdentityKind::Cidr { .. }) && i.id != enforcer_common::IDENTITY_WORLD
}

fn cidr_selects(c: &CidrPeer, i: &Identity) -> bool {
    use crate::identity::mask;
    let within = |(p, l): (std::net::Ipv4Addr, u8), (outer, ol): (std::net::Ipv4Addr, u8)| {
        l >= ol && mask(p, ol) == mask(outer, ol)
    };
    match i.kind {
        IdentityKind::Cidr { prefix, len } => {
            within((prefix, len), c.prefix) && !c.except.iter().any(|e| within((prefix, len), *e))
        }
        // Addresses covered by no named prefix are `world`: selected by a CIDR covering all.
        _ if i.id == enforcer_common::IDENTITY_WORLD => c.prefix.1 == 0,
        _ => false,
    }
}

fn entity_selects(e: EntityKind, i: &Identity) -> bool {
    use enforcer_common::*;
    let is_world = i.id == IDENTITY_WORLD || matches!(i.kind, IdentityKind::Cidr { .. });
    match e {
        EntityKind::All => true,
        EntityKind::World => is_world,
        EntityKind::Cluster => !is_world,
        EntityKind::Host => i.id == IDENTITY_HOST,
        EntityKind::RemoteNode => i.id == IDENTITY_REMOTE_NODE,
        EntityKind::KubeApiserver => i.id == IDENTITY_KUBE_APISERVER,
        EntityKind::Ingress => i.id == IDENTITY_INGRESS,
        EntityKind::Init => i.id == IDENTITY_INIT,
        EntityKind::Health => i.id == IDENTITY_HEALTH,
        EntityKind::Unmanaged => i.id == IDENTITY_UNMANAGED,
        EntityKind::None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identities, pod_labels};
    use enforcer_common::*;
    use std::net::Ipv4Addr;

    const IN: Direction = Direction::Ingress;
    const EG: Direction = Direction::Egress;

    /// `key=value` pairs that must all be present (with any source).
    #[derive(Debug)]
    struct Has(Vec<(&'static str, &'static str)>);
    impl LabelMatcher for Has {
        fn matches(&self, labels: &LabelSet) -> bool {
            self.0.iter().all(|(k, v)| {
                labels
                    .iter()
                    .any(|(lk, lv)| lk.split_once(':').map(|(_, key)| key) == Some(*k) && lv == v)
            })
        }
    }

    struct World {
        ids: Identities,
        eps: Vec<EndpointRef>,
    }

    fn world() -> World {
        let mut ids = Identities::new();
        let mut eps = Vec::new();
        for (n, labels) in [
            (1, vec![("org", "empire"), ("class", "deathstar")]),
            (2, vec![("org", "empire"), ("class", "tiefighter")]),
            (3, vec![("org", "alliance"), ("class", "xwing")]),
        ] {
            let l = pod_labels(
                "default",
                &labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                &Default::default(),
                "default",
            );
            ids.acquire_pod(l.clone());
            eps.push(EndpointRef {
                ep_id: n,
                labels: l,
                named_ports: Default::default(),
            });
        }
        World { ids, eps }
    }

    fn ident(w: &World, ep: usize) -> u32 {
        w.ids
            .all()
            .find(|i| i.labels == w.eps[ep].labels)
            .unwrap()
            .id
    }

    fn rule(
        rule_ref: u32,
        subject: Vec<(&'static str, &'static str)>,
        dir: Direction,
        peers: Peers,
    ) -> NormRule {
        NormRule {
            rule_ref,
            audit: false,
            subject: Arc::new(Has(subject)),
            direction: dir,
            deny: false,
            peers,
            ports: None,
            port_names: vec![],
            http: None,
            default_deny: true,
        }
    }

    fn from(labels: Vec<(&'static str, &'static str)>) -> Peers {
        Peers::Select {
            endpoints: vec![Arc::new(Has(labels))],
            cidrs: vec![],
            entities: vec![],
        }
    }

    /// The datapath's lookup, done on the resolved map: longest prefix, then the endpoint default.
    fn lookup(
        r: &Resolved,
        ep: u32,
        peer: u32,
        dir: Direction,
        proto: u8,
        port: u16,
    ) -> (Verdict, Verdict) {
        let full = MapKey::exact(ep, peer, dir, proto, port);
        let hit = full.covering().find_map(|k| r.map.get(&k));
        let flags = r.flags.get(&ep).copied().unwrap_or(0);
        let (e_bit, w_bit) = if dir == IN {
            (EP_INGRESS_ENFORCED, EP_INGRESS_WOULD_ENFORCE)
        } else {
            (EP_EGRESS_ENFORCED, EP_EGRESS_WOULD_ENFORCE)
        };
        let def = |bit: u32| {
            if flags & bit != 0 {
                Verdict::Deny
            } else {
                Verdict::Allow
            }
        };
        match hit {
            Some(v) => (
                if v.verdict == Verdict::None {
                    def(e_bit)
                } else {
                    v.verdict
                },
                if v.audit_verdict == Verdict::None {
                    def(w_bit)
                } else {
                    v.audit_verdict
                },
            ),
            None => (def(e_bit), def(w_bit)),
        }
    }

    fn ids(w: &World) -> Vec<&Identity> {
        w.ids.all().collect()
    }

    #[test]
    fn l3_l4_star_wars() {
        let w = world();
        let mut r = rule(
            1,
            vec![("class", "deathstar")],
            IN,
            from(vec![("org", "empire")]),
        );
        r.ports = Some(vec![PortRange {
            proto: 6,
            first: 80,
            last: 80,
        }]);
        let res = resolve(&[r], &w.eps, &ids(&w), 0);
        let (tie, xwing) = (ident(&w, 1), ident(&w, 2));
        assert_eq!(lookup(&res, 1, tie, IN, 6, 80).0, Verdict::Allow);
        assert_eq!(lookup(&res, 1, tie, IN, 6, 81).0, Verdict::Deny);
        assert_eq!(lookup(&res, 1, xwing, IN, 6, 80).0, Verdict::Deny);
        // The ships are not selected: no default deny for them.
        assert_eq!(lookup(&res, 3, tie, IN, 6, 80).0, Verdict::Allow);
        // Egress of the deathstar is untouched (default deny is per direction).
        assert_eq!(lookup(&res, 1, xwing, EG, 6, 80).0, Verdict::Allow);
        assert_eq!(res.enforcers.get(&(1, DIR_INGRESS)), Some(&vec![1]));
    }

    #[test]
    fn deny_range_beats_allowed_port_inside_it() {
        let w = world();
        let tie = ident(&w, 1);
        let mut allow = rule(1, vec![("class", "deathstar")], IN, Peers::Any);
        allow.ports = Some(vec![PortRange {
            proto: 6,
            first: 80,
            last: 80,
        }]);
        let mut deny = rule(
            2,
            vec![("class", "deathstar")],
            IN,
            from(vec![("class", "tiefighter")]),
        );
        deny.deny = true;
        deny.ports = Some(vec![PortRange {
            proto: 6,
            first: 64,
            last: 127,
        }]);
        let res = resolve(&[allow, deny], &w.eps, &ids(&w), 0);
        assert_eq!(lookup(&res, 1, tie, IN, 6, 80).0, Verdict::Deny);
        assert_eq!(lookup(&res, 1, ident(&w, 2), IN, 6, 80).0, Verdict::Allow);
        let v = res
            .map
            .values()
            .find(|v| v.verdict == Verdict::Deny)
            .unwrap();
        assert_eq!(v.rule_ref, 2);
    }

    #[test]
    fn l4_only_allow_lifts_l7_on_the_same_port() {
        let w = world();
        let spec = HttpSpec {
            method: Some("GET".into()),
            path: Some("/v1".into()),
            host: None,
            headers: vec![],
            rule_ref: 1,
        };
        let mut l7 = rule(1, vec![("class", "deathstar")], IN, Peers::Any);
        l7.ports = Some(vec![PortRange {
            proto: 6,
            first: 80,
            last: 80,
        }]);
        l7.http = Some(vec![spec]);
        let mut l4 = rule(
            2,
            vec![("class", "deathstar")],
            IN,
            from(vec![("class", "tiefighter")]),
        );
        l4.ports = Some(vec![PortRange {
            proto: 6,
            first: 80,
            last: 80,
        }]);
        let res = resolve(&[l7, l4], &w.eps, &ids(&w), 15001);
        assert_eq!(lookup(&res, 1, ident(&w, 1), IN, 6, 80).0, Verdict::Allow);
        assert_eq!(
            lookup(&res, 1, ident(&w, 2), IN, 6, 80).0,
            Verdict::Redirect
        );
        let key = MapKey::exact(1, ident(&w, 2), IN, 6, 80);
        assert_eq!(res.http.get(&key).map(|h| h.len()), Some(1));
        assert!(res.map.values().any(|v| v.proxy_port == 15001));
    }

    fn http(method: &str, rule_ref: u32) -> HttpSpec {
        HttpSpec {
            method: Some(method.into()),
            path: None,
            host: None,
            headers: vec![],
            rule_ref,
        }
    }

    /// The HTTP rules the proxy finds for an exact key: the most specific covering entry, unless
    /// a non-redirect entry is found first (as in `l7::rules_for`).
    fn l7_rules(r: &Resolved, key: MapKey) -> Option<Vec<HttpSpec>> {
        key.covering()
            .take_while(|k| !r.l7_shadowed.contains(k))
            .find_map(|k| r.http.get(&k).cloned())
    }

    #[test]
    fn l7_rules_on_a_port_range_redirect_every_port_of_it() {
        let w = world();
        let tie = ident(&w, 1);
        let mut l7 = rule(1, vec![("class", "deathstar")], IN, Peers::Any);
        l7.ports = Some(vec![PortRange {
            proto: 6,
            first: 8080,
            last: 8090,
        }]);
        l7.http = Some(vec![http("GET", 1)]);
        let res = resolve(&[l7], &w.eps, &ids(&w), 15001);
        for port in 8080..=8090 {
            assert_eq!(
                lookup(&res, 1, tie, IN, 6, port).0,
                Verdict::Redirect,
                "{port}"
            );
            let rules = l7_rules(&res, MapKey::exact(1, tie, IN, 6, port));
            assert_eq!(rules, Some(vec![http("GET", 1)]), "{port}");
        }
        assert_eq!(lookup(&res, 1, tie, IN, 6, 8091).0, Verdict::Deny);
        assert_eq!(lookup(&res, 1, tie, IN, 17, 8080).0, Verdict::Deny);
        // A range is a few prefix entries, not one per port.
        assert_eq!(
            res.http.len(),
            3 * w.ids.all().count(),
            "{:?}",
            res.http.keys()
        );
    }

    #[test]
    fn l7_rules_on_a_port_and_on_a_range_over_it_are_unioned() {
        let w = world();
        let tie = ident(&w, 1);
        let mut range = rule(1, vec![("class", "deathstar")], IN, Peers::Any);
        range.ports = Some(vec![PortRange {
            proto: 6,
            first: 8080,
            last: 8095,
        }]);
        range.http = Some(vec![http("GET", 1)]);
        let mut one = rule(2, vec![("class", "deathstar")], IN, Peers::Any);
        one.ports = Some(vec![PortRange {
            proto: 6,
            first: 8081,
            last: 8081,
        }]);
        one.http = Some(vec![http("POST", 2)]);
        let res = resolve(&[range, one], &w.eps, &ids(&w), 15001);
        let on = |port| l7_rules(&res, MapKey::exact(1, tie, IN, 6, port)).unwrap();
        assert_eq!(on(8081), vec![http("GET", 1), http("POST", 2)]);
        assert_eq!(on(8080), vec![http("GET", 1)]);
    }

    #[test]
    fn an_l4_allow_on_one_port_of_an_l7_range_lifts_l7_there_only() {
        let w = world();
        let (tie, xwing) = (ident(&w, 1), ident(&w, 2));
        let mut range = rule(1, vec![("class", "deathstar")], IN, Peers::Any);
        range.ports = Some(vec![PortRange {
            proto: 6,
            first: 8080,
            last: 8095,
        }]);
        range.http = Some(vec![http("GET", 1)]);
        let mut l4 = rule(
            2,
            vec![("class", "deathstar")],
            IN,
            from(vec![("class", "tiefighter")]),
        );
        l4.ports = Some(vec![PortRange {
            proto: 6,
            first: 8081,
            last: 8081,
        }]);
        let res = resolve(&[range, l4], &w.eps, &ids(&w), 15001);
        assert_eq!(lookup(&res, 1, tie, IN, 6, 8081).0, Verdict::Allow);
        assert_eq!(l7_rules(&res, MapKey::exact(1, tie, IN, 6, 8081)), None);
        assert_eq!(lookup(&res, 1, tie, IN, 6, 8082).0, Verdict::Redirect);
        assert!(l7_rules(&res, MapKey::exact(1, tie, IN, 6, 8082)).is_some());
        // Other peers keep the L7 rules on every port of the range.
        assert_eq!(lookup(&res, 1, xwing, IN, 6, 8081).0, Verdict::Redirect);
        assert!(l7_rules(&res, MapKey::exact(1, xwing, IN, 6, 8081)).is_some());
    }

    #[test]
    fn audit_policies_only_change_the_would_be_verdict() {
        let w = world();
        let mut r = rule(
            1,
            vec![("class", "deathstar")],
            IN,
            from(vec![("org", "empire")]),
        );
        r.audit = true;
        let res = resolve(&[r], &w.eps, &ids(&w), 0);
        assert_eq!(
            lookup(&res, 1, ident(&w, 2), IN, 6, 80),
            (Verdict::Allow, Verdict::Deny)
        );
        assert_eq!(
            lookup(&res, 1, ident(&w, 1), IN, 6, 80),
            (Verdict::Allow, Verdict::Allow)
        );
    }

    #[test]
    fn cidr_and_entities() {
        let mut w = world();
        w.ids.set_cidrs(&[
            (Ipv4Addr::new(10, 0, 0, 0), 8),
            (Ipv4Addr::new(10, 1, 0, 0), 16),
        ]);
        let ten = w.ids.cidr_identity(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap();
        let ten_one = w.ids.cidr_identity(Ipv4Addr::new(10, 1, 0, 0), 16).unwrap();
        let r = rule(
            1,
            vec![("class", "deathstar")],
            IN,
            Peers::Select {
                endpoints: vec![],
                cidrs: vec![CidrPeer {
                    prefix: (Ipv4Addr::new(10, 0, 0, 0), 8),
                    except: vec![(Ipv4Addr::new(10, 1, 0, 0), 16)],
                }],
                entities: vec![EntityKind::Host],
            },
        );
        let res = resolve(&[r], &w.eps, &ids(&w), 0);
        assert_eq!(lookup(&res, 1, ten, IN, 6, 1).0, Verdict::Allow);
        assert_eq!(lookup(&res, 1, ten_one, IN, 6, 1).0, Verdict::Deny);
        assert_eq!(lookup(&res, 1, IDENTITY_WORLD, IN, 6, 1).0, Verdict::Deny);
        assert_eq!(lookup(&res, 1, IDENTITY_HOST, IN, 6, 1).0, Verdict::Allow);
        // CIDR rules never select pods.
        assert_eq!(lookup(&res, 1, ident(&w, 1), IN, 6, 1).0, Verdict::Deny);
    }

    #[test]
    fn world_entity_and_all() {
        let mut w = world();
        w.ids.set_cidrs(&[(Ipv4Addr::new(192, 0, 2, 0), 24)]);
        let doc = w
            .ids
            .cidr_identity(Ipv4Addr::new(192, 0, 2, 0), 24)
            .unwrap();
        let r = rule(
            1,
            vec![("class", "deathstar")],
            IN,
            Peers::Select {
                endpoints: vec![],
                cidrs: vec![],
                entities: vec![EntityKind::World],
            },
        );
        let res = resolve(&[r], &w.eps, &ids(&w), 0);
        assert_eq!(lookup(&res, 1, IDENTITY_WORLD, IN, 6, 1).0, Verdict::Allow);
        assert_eq!(lookup(&res, 1, doc, IN, 6, 1).0, Verdict::Allow);
        assert_eq!(lookup(&res, 1, IDENTITY_HOST, IN, 6, 1).0, Verdict::Deny);
    }

    #[test]
    fn empty_peer_list_selects_nothing_but_enables_default_deny() {
        let w = world();
        let r = rule(
            1,
            vec![("class", "deathstar")],
            IN,
            Peers::Select {
                endpoints: vec![],
                cidrs: vec![],
                entities: vec![],
            },
        );
        let res = resolve(&[r], &w.eps, &ids(&w), 0);
        assert!(res.map.is_empty());
        assert_eq!(lookup(&res, 1, ident(&w, 1), IN, 6, 80).0, Verdict::Deny);
    }

    #[test]
    fn port_ranges_decompose_exactly() {
        assert_eq!(range_to_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(range_to_prefixes(0, 65535), vec![(0, 0)]);
        let blocks = range_to_prefixes(30000, 30009);
        let covered: Vec<u16> = blocks
            .iter()
            .flat_map(|(s, b)| *s..=s + ((1u32 << (16 - b)) - 1) as u16)
            .collect();
        assert_eq!(covered, (30000..=30009).collect::<Vec<_>>());
        for (lo, hi) in [(1, 65535), (1023, 1025), (5, 6), (65535, 65535)] {
            let total: u32 = range_to_prefixes(lo, hi)
                .iter()
                .map(|(_, b)| 1u32 << (16 - b))
                .sum();
            assert_eq!(total, u32::from(hi - lo) + 1);
        }
    }

    #[test]
    fn named_ports_resolve_per_endpoint() {
        let mut w = world();
        let http = |port| {
            Arc::new(vec![NamedPort {
                name: "http".into(),
                proto: 6,
                port,
            }])
        };
        w.eps[0].named_ports = http(8080);
        w.eps[1].named_ports = http(9090);
        let mut ingress = rule(1, vec![("class", "deathstar")], IN, Peers::Any);
        ingress.ports = Some(vec![]);
        ingress.port_names = vec![PortName {
            name: "http".into(),
            protos: vec![6, 17],
        }];
        let mut egress = rule(2, vec![("class", "xwing")], EG, Peers::Any);
        egress.ports = Some(vec![]);
        egress.port_names = ingress.port_names.clone();
        let res = resolve(&[ingress, egress], &w.eps, &ids(&w), 0);
        let (xwing, deathstar) = (ident(&w, 2), ident(&w, 0));
        // Ingress: the selected pod's own number for the name.
        assert_eq!(lookup(&res, 1, xwing, IN, 6, 8080).0, Verdict::Allow);
        assert_eq!(lookup(&res, 1, xwing, IN, 6, 9090).0, Verdict::Deny);
        assert_eq!(lookup(&res, 1, xwing, IN, 17, 8080).0, Verdict::Deny);
        // Egress: any pod's number for the name (Cilium's named-port multimap).
        assert_eq!(lookup(&res, 3, deathstar, EG, 6, 8080).0, Verdict::Allow);
        assert_eq!(lookup(&res, 3, deathstar, EG, 6, 9090).0, Verdict::Allow);
        assert_eq!(lookup(&res, 3, deathstar, EG, 6, 80).0, Verdict::Deny);
        // A name nobody declares allows nothing.
        assert_eq!(res.decide(2, xwing, IN, 6, 8080), (Verdict::Allow, 0));
    }
}
