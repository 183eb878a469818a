//! From the policies users write ([`api`](super::api)) to the flat rules resolution works on
//! ([`resolve`](super::resolve)): one rule per direction, subject, peer set and port list, with
//! Cilium's implicit namespace scoping and its default-deny switches made explicit, and a rule
//! table that lets flows name the exact rule (and line) that decided.

use std::{collections::BTreeSet, net::Ipv4Addr, sync::Arc};

use crate::{
    engine::{RuleInfo, RuleSet},
    identity::LabelSet,
    policy::{
        api::{
            CidrRule, EgressDenyRule, EgressRule, EndpointSelector, Entity, IcmpFamily, IcmpRule,
            IngressDenyRule, IngressRule, PolicyDoc, PolicyKind, PortProtocol, PortRule, Protocol,
        },
        cidrgroup::{self, CidrGroupDoc},
        resolve::{
            CidrPeer, Direction, EntityKind, HttpSpec, LabelMatcher, NormRule, Peers, PortName,
            PortRange,
        },
        selector::Labels,
    },
    yaml::Located,
};

/// The namespace label Cilium gives every pod.
pub const NAMESPACE_LABEL: &str = "k8s:io.kubernetes.pod.namespace";

/// An endpoint selector, scoped to a namespace for namespaced policies.
#[derive(Debug)]
pub struct ScopedSelector {
    pub selector: EndpointSelector,
    pub namespace: Option<String>,
    /// `{}` selects pods only (not the node or the outside world).
    pub pods_only: bool,
}

impl LabelMatcher for ScopedSelector {
    fn matches(&self, labels: &LabelSet) -> bool {
        if self.pods_only && !labels.contains_key(NAMESPACE_LABEL) {
            return false;
        }
        if let Some(ns) = &self.namespace
            && labels.get(NAMESPACE_LABEL) != Some(ns)
        {
            return false;
        }
        self.selector.matches(&Labels(labels.clone()))
    }
}

fn mentions_namespace(sel: &EndpointSelector) -> bool {
    let is_ns = |k: &str| k.rsplit(':').next() == Some("io.kubernetes.pod.namespace");
    sel.match_labels.iter().flatten().any(|(k, _)| is_ns(k))
        || sel
            .match_expressions
            .iter()
            .flatten()
            .any(|e| is_ns(&e.key))
}

fn mentions_reserved(sel: &EndpointSelector) -> bool {
    sel.match_labels
        .iter()
        .flatten()
        .any(|(k, _)| k.starts_with("reserved:"))
        || sel
            .match_expressions
            .iter()
            .flatten()
            .any(|e| e.key.starts_with("reserved:"))
}

/// Cilium's scoping: a namespaced policy's selectors only see its own namespace unless they
/// name a namespace themselves (or select reserved identities).
fn scope(sel: &EndpointSelector, doc: &PolicyDoc) -> ScopedSelector {
    let namespace = match doc.kind {
        PolicyKind::Namespaced if !mentions_namespace(sel) && !mentions_reserved(sel) => {
            doc.namespace.clone()
        }
        _ => None,
    };
    ScopedSelector {
        selector: sel.clone(),
        namespace,
        pods_only: sel.is_empty(),
    }
}

/// Builds the rule set for `docs`, without CIDR groups (entries naming one select nothing).
/// Errors name the file and line of what cannot be enforced.
pub fn normalize(docs: &[PolicyDoc]) -> Result<RuleSet, Vec<Located>> {
    normalize_with_groups(docs, &[])
}

/// Builds the rule set for `docs`, CIDR-set entries that name CiliumCIDRGroups standing for
/// the prefixes of those among `groups`.
pub fn normalize_with_groups(
    docs: &[PolicyDoc],
    groups: &[CidrGroupDoc],
) -> Result<RuleSet, Vec<Located>> {
    let mut set = RuleSet::default();
    let mut cidrs = BTreeSet::new();
    let mut errors = Vec::new();
    for doc in docs {
        let audit = doc.audit_mode();
        let spec_path = |i: usize| {
            if doc.raw.get("spec").is_some() && i == 0 {
                "spec".to_owned()
            } else {
                let offset = usize::from(doc.raw.get("spec").is_some());
                format!("specs[{}]", i - offset)
            }
        };
        for (spec_index, rule) in doc.rules.iter().enumerate() {
            let base = spec_path(spec_index);
            let Some(subject_sel) = &rule.endpoint_selector else {
                errors.push(located(doc, &format!("{base}.nodeSelector"), "nodeSelector (host policies) is valid Cilium but not supported by the lab: the lab's node has no host firewall"));
                continue;
            };
            let mut cx = Ctx {
                doc,
                audit,
                base: &base,
                set: &mut set,
                cidrs: &mut cidrs,
                spec_index,
                groups,
            };
            let dd = rule.enable_default_deny.as_ref();
            let ingress_dd = dd.and_then(|d| d.ingress);
            let egress_dd = dd.and_then(|d| d.egress);
            let has_ingress = rule.ingress.as_ref().is_some_and(|v| !v.is_empty())
                || rule.ingress_deny.as_ref().is_some_and(|v| !v.is_empty());
            let has_egress = rule.egress.as_ref().is_some_and(|v| !v.is_empty())
                || rule.egress_deny.as_ref().is_some_and(|v| !v.is_empty());
            let ingress_default_deny = ingress_dd.unwrap_or(has_ingress);
            let egress_default_deny = egress_dd.unwrap_or(has_egress);

            for (i, r) in rule.ingress.iter().flatten().enumerate() {
                cx.ingress(subject_sel, i, r, ingress_default_deny);
            }
            for (i, r) in rule.ingress_deny.iter().flatten().enumerate() {
                cx.ingress_deny(subject_sel, i, r, ingress_default_deny);
            }
            for (i, r) in rule.egress.iter().flatten().enumerate() {
                cx.egress(subject_sel, i, r, egress_default_deny);
            }
            for (i, r) in rule.egress_deny.iter().flatten().enumerate() {
                cx.egress_deny(subject_sel, i, r, egress_default_deny);
            }
            // `enableDefaultDeny: true` without rules still switches the direction on.
            for (dir, on, has) in [
                (Direction::Ingress, ingress_dd == Some(true), has_ingress),
                (Direction::Egress, egress_dd == Some(true), has_egress),
            ] {
                if on && !has {
                    // A NetworkPolicy says it with `policyTypes` (or by having no rules).
                    let section = match doc.kind {
                        PolicyKind::Kubernetes => "policyTypes",
                        _ => "enableDefaultDeny",
                    };
                    let rr = cx.rule_info(section, 0, &format!("{base}.{section}"));
                    cx.set.rules.push(NormRule {
                        rule_ref: rr,
                        audit,
                        subject: Arc::new(scope(subject_sel, doc)),
                        direction: dir,
                        deny: false,
                        peers: Peers::Select {
                            endpoints: vec![],
                            cidrs: vec![],
                            entities: vec![],
                        },
                        ports: Some(vec![]),
                        port_names: vec![],
                        http: None,
                        default_deny: true,
                    });
                }
            }
        }
    }
    set.cidrs = cidrs.into_iter().collect();
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors)
    }
}

fn located(doc: &PolicyDoc, path: &str, message: &str) -> Located {
    let place = doc.locations.line_of(path).unwrap_or((doc.source.line, 1));
    let mut e = Located::new(doc.source.file.clone(), place, path, message);
    e.kind = crate::yaml::ErrorKind::Unsupported;
    e
}

struct Ctx<'a> {
    doc: &'a PolicyDoc,
    audit: bool,
    base: &'a str,
    set: &'a mut RuleSet,
    cidrs: &'a mut BTreeSet<(Ipv4Addr, u8)>,
    spec_index: usize,
    groups: &'a [CidrGroupDoc],
}

/// The peer fields of one rule, whichever direction.
struct PeerFields<'a> {
    endpoints: Option<&'a Vec<EndpointSelector>>,
    cidr: Option<&'a Vec<String>>,
    cidr_set: Option<&'a Vec<CidrRule>>,
    entities: Option<&'a Vec<Entity>>,
}

impl Ctx<'_> {
    fn rule_info(&mut self, section: &str, index: usize, path: &str) -> u32 {
        let (line, _) = self
            .doc
            .locations
            .line_of(path)
            .unwrap_or((self.doc.source.line, 1));
        self.set.table.push(RuleInfo {
            policy: self.doc.name.clone(),
            namespace: self.doc.namespace.clone(),
            kind: self.doc.kind.as_str().into(),
            section: section.into(),
            spec_index: self.spec_index,
            rule_index: index,
            source: format!("{}:{line}", self.doc.source.file),
            audit: self.audit,
        });
        (self.set.table.len() - 1) as u32
    }

    fn ingress(&mut self, subject: &EndpointSelector, i: usize, r: &IngressRule, dd: bool) {
        let peers = PeerFields {
            endpoints: r.from_endpoints.as_ref(),
            cidr: r.from_cidr.as_ref(),
            cidr_set: r.from_cidr_set.as_ref(),
            entities: r.from_entities.as_ref(),
        };
        self.add(
            "ingress",
            Direction::Ingress,
            false,
            subject,
            i,
            peers,
            icmp_ports(&r.icmps).or(r.to_ports.as_deref().map(PortsRef::Allow)),
            dd,
        );
    }

    fn ingress_deny(
        &mut self,
        subject: &EndpointSelector,
        i: usize,
        r: &IngressDenyRule,
        dd: bool,
    ) {
        let peers = PeerFields {
            endpoints: r.from_endpoints.as_ref(),
            cidr: r.from_cidr.as_ref(),
            cidr_set: r.from_cidr_set.as_ref(),
            entities: r.from_entities.as_ref(),
        };
        let ports = r.to_ports.as_ref().map(|v| {
            PortsRef::Deny(
                v.iter()
                    .map(|p| p.ports.clone().unwrap_or_default())
                    .collect(),
            )
        });
        self.add(
            "ingressDeny",
            Direction::Ingress,
            true,
            subject,
            i,
            peers,
            icmp_ports(&r.icmps).or(ports),
            dd,
        );
    }

    fn egress(&mut self, subject: &EndpointSelector, i: usize, r: &EgressRule, dd: bool) {
        let peers = PeerFields {
            endpoints: r.to_endpoints.as_ref(),
            cidr: r.to_cidr.as_ref(),
            cidr_set: r.to_cidr_set.as_ref(),
            entities: r.to_entities.as_ref(),
        };
        self.add(
            "egress",
            Direction::Egress,
            false,
            subject,
            i,
            peers,
            icmp_ports(&r.icmps).or(r.to_ports.as_deref().map(PortsRef::Allow)),
            dd,
        );
    }

    fn egress_deny(&mut self, subject: &EndpointSelector, i: usize, r: &EgressDenyRule, dd: bool) {
        let peers = PeerFields {
            endpoints: r.to_endpoints.as_ref(),
            cidr: r.to_cidr.as_ref(),
            cidr_set: r.to_cidr_set.as_ref(),
            entities: r.to_entities.as_ref(),
        };
        let ports = r.to_ports.as_ref().map(|v| {
            PortsRef::Deny(
                v.iter()
                    .map(|p| p.ports.clone().unwrap_or_default())
                    .collect(),
            )
        });
        self.add(
            "egressDeny",
            Direction::Egress,
            true,
            subject,
            i,
            peers,
            icmp_ports(&r.icmps).or(ports),
            dd,
        );
    }

    /// The peers of a rule. Without any peer field, a rule with `toPorts` applies to every peer
    /// on those ports, and a rule without `toPorts` either (`ingress: [{}]`) selects nothing —
    /// it only switches its direction to default deny, as in Cilium.
    fn peers(&mut self, p: &PeerFields, has_ports: bool) -> Peers {
        if p.endpoints.is_none() && p.cidr.is_none() && p.cidr_set.is_none() && p.entities.is_none()
        {
            return if has_ports {
                Peers::Any
            } else {
                Peers::Select {
                    endpoints: vec![],
                    cidrs: vec![],
                    entities: vec![],
                }
            };
        }
        let endpoints = p
            .endpoints
            .iter()
            .flat_map(|v| v.iter())
            .map(|s| Arc::new(scope(s, self.doc)) as Arc<dyn LabelMatcher>)
            .collect();
        let mut cidrs = Vec::new();
        for c in p.cidr.iter().flat_map(|v| v.iter()) {
            // An IPv6 prefix (validated already) selects nothing in the lab's IPv4-only
            // network, as in an IPv4-only Cilium cluster; `lab audit` says so.
            if let Some(prefix) = parse_cidr(c) {
                self.note_cidr(prefix);
                cidrs.push(CidrPeer {
                    prefix,
                    except: vec![],
                });
            }
        }
        for set in p.cidr_set.iter().flat_map(|v| v.iter()) {
            // The entry's prefix, or its groups' (none for a group that does not exist: the
            // entry selects nothing, as in Cilium); IPv6 ones as above. `except` applies to each.
            let prefixes = cidrgroup::prefixes_of(set, self.groups);
            let except: Vec<_> = set
                .except
                .iter()
                .flatten()
                .filter_map(|e| parse_cidr(e))
                .collect();
            for &prefix in &prefixes {
                self.note_cidr(prefix);
                for &ex in &except {
                    self.note_cidr(ex);
                }
                cidrs.push(CidrPeer {
                    prefix,
                    except: except.clone(),
                });
            }
        }
        let entities = p
            .entities
            .iter()
            .flat_map(|v| v.iter())
            .map(|e| match e {
                Entity::All => EntityKind::All,
                Entity::World | Entity::WorldIpv4 => EntityKind::World,
                Entity::Cluster => EntityKind::Cluster,
                Entity::Host => EntityKind::Host,
                Entity::RemoteNode => EntityKind::RemoteNode,
                Entity::KubeApiserver => EntityKind::KubeApiserver,
                Entity::Ingress => EntityKind::Ingress,
                Entity::Init => EntityKind::Init,
                Entity::Health => EntityKind::Health,
                Entity::Unmanaged => EntityKind::Unmanaged,
                // The lab is IPv4 only: nothing is world-ipv6.
                Entity::None | Entity::WorldIpv6 => EntityKind::None,
            })
            .collect();
        Peers::Select {
            endpoints,
            cidrs,
            entities,
        }
    }

    fn note_cidr(&mut self, prefix: (Ipv4Addr, u8)) {
        if prefix.1 > 0 {
            self.cidrs.insert(prefix);
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per direction of rule"
    )]
    fn add(
        &mut self,
        section: &str,
        direction: Direction,
        deny: bool,
        subject: &EndpointSelector,
        index: usize,
        peers: PeerFields,
        ports: Option<PortsRef>,
        default_deny: bool,
    ) {
        let path = format!("{}.{section}[{index}]", self.base);
        let rule_ref = self.rule_info(section, index, &path);
        let entries: Vec<PortsAndHttp> = match ports {
            None => vec![(None, vec![], None)],
            Some(PortsRef::Allow(list)) => {
                if list.is_empty() {
                    vec![(Some(vec![]), vec![], None)]
                } else {
                    list.iter()
                        .enumerate()
                        .map(|(k, pr)| self.port_rule(&format!("{path}.toPorts[{k}]"), pr, section))
                        .collect()
                }
            }
            Some(PortsRef::Icmp(ranges)) => vec![(Some(ranges), vec![], None)],
            Some(PortsRef::Deny(list)) => list
                .iter()
                .map(|pp| {
                    let (ports, names) = self.port_list(pp, false);
                    (Some(ports), names, None)
                })
                .collect(),
        };
        let has_ports = entries.iter().any(|(ports, _, _)| ports.is_some());
        let peers = self.peers(&peers, has_ports);
        let subject: Arc<dyn LabelMatcher> = Arc::new(scope(subject, self.doc));
        for (ports, port_names, http) in entries {
            self.set.rules.push(NormRule {
                rule_ref,
                audit: self.audit,
                subject: subject.clone(),
                direction,
                deny,
                peers: peers.clone(),
                ports,
                port_names,
                http,
                default_deny,
            });
        }
    }

    fn port_rule(&mut self, path: &str, pr: &PortRule, section: &str) -> PortsAndHttp {
        // An empty `http` list is no L7 rule at all, as in Cilium (`L7Rules.IsEmpty`): the
        // port is allowed at L4, not sent to the proxy to refuse every request.
        let http_rules = pr
            .rules
            .as_ref()
            .and_then(|r| r.http.as_ref())
            .filter(|h| !h.is_empty());
        let with_l7 = http_rules.is_some();
        let (ports, names) = self.port_list(pr.ports.as_deref().unwrap_or_default(), with_l7);
        let http = http_rules.map(|rules| {
            rules
                .iter()
                .enumerate()
                .map(|(h, r)| {
                    let hp = format!("{path}.rules.http[{h}]");
                    let rule_ref = self.rule_info(&format!("{section}/http"), h, &hp);
                    HttpSpec {
                        method: r.method.clone(),
                        path: r.path.clone(),
                        host: r.host.clone(),
                        headers: r.headers.clone().unwrap_or_default(),
                        rule_ref,
                    }
                })
                .collect()
        });
        (Some(ports), names, http)
    }

    /// Port entries to ranges and port names; `ANY` means TCP, UDP and SCTP. With L7 rules
    /// only TCP counts. The port-less protocols (GRE, ESP, ...) come with port "0": every
    /// packet of theirs.
    fn port_list(&mut self, ports: &[PortProtocol], l7: bool) -> (Vec<PortRange>, Vec<PortName>) {
        let mut out = Vec::new();
        let mut names = Vec::new();
        for pp in ports {
            let protos: &[u8] = match pp.protocol.unwrap_or(Protocol::Any) {
                Protocol::Any if l7 => &[6],
                p => p.numbers(),
            };
            let Some(first) = pp.number() else {
                // Resolved per endpoint from the pods' container ports.
                names.push(PortName {
                    name: pp.port.clone(),
                    protos: protos.to_vec(),
                });
                continue;
            };
            let (first, last) = match (first, pp.end_port) {
                (0, _) => (0, u16::MAX),
                (p, Some(e)) => (p, e),
                (p, None) => (p, p),
            };
            for &proto in protos {
                out.push(PortRange { proto, first, last });
            }
        }
        (out, names)
    }
}

/// The ports of one `toPorts` entry (`None`: all), its named ports and its L7 rules.
type PortsAndHttp = (Option<Vec<PortRange>>, Vec<PortName>, Option<Vec<HttpSpec>>);

enum PortsRef<'a> {
    Allow(&'a [PortRule]),
    Deny(Vec<Vec<PortProtocol>>),
    /// The ICMP types of `icmps`, as ports of protocol ICMP.
    Icmp(Vec<PortRange>),
}

/// A rule's `icmps` as port ranges: like Cilium, the lab keys an ICMP type as the port of
/// protocol ICMP, so the types combine with the rule's peers as `toPorts` do. `None` when the
/// list is absent or empty (Cilium then treats the rule as if it had none). ICMPv6 types select
/// nothing in the lab's IPv4-only network (`lab audit` says so).
fn icmp_ports(icmps: &Option<Vec<IcmpRule>>) -> Option<PortsRef<'static>> {
    let rules = icmps.as_ref().filter(|r| !r.is_empty())?;
    let mut ranges = Vec::new();
    for field in rules.iter().flat_map(|r| &r.fields) {
        if let Some((family, t)) = field.resolve()
            && family == IcmpFamily::V4
        {
            ranges.push(PortRange {
                proto: family.protocol(),
                first: u16::from(t),
                last: u16::from(t),
            });
        }
    }
    Some(PortsRef::Icmp(ranges))
}

/// An IPv4 prefix (a bare address is a /32, as in Cilium); IPv6 → None.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok()?),
        None => (s, 32),
    };
    let ip: Ipv4Addr = addr.parse().ok()?;
    (len <= 32).then(|| (crate::identity::mask(ip, len), len))
}

/// Adds connection limits to a normalised rule set (their table entries name them in flows).
pub fn normalize_limits(limits: &[crate::policy::limits::LimitDoc], set: &mut RuleSet) {
    for l in limits {
        let (line, _) = l.locations.line_of("spec").unwrap_or((l.source.line, 1));
        set.table.push(RuleInfo {
            policy: l.name.clone(),
            namespace: Some(l.namespace.clone()),
            kind: crate::policy::limits::KIND.into(),
            section: format!(
                "maxConnections={} on port {}",
                l.spec.max_connections, l.spec.port
            ),
            spec_index: 0,
            rule_index: 0,
            source: format!("{}:{line}", l.source.file),
            audit: false,
        });
        let limit_ref = (set.table.len() - 1) as u32;
        // Scoped like a namespaced policy.
        let scoped = |sel: &EndpointSelector| -> Arc<dyn LabelMatcher> {
            let namespace =
                (!mentions_namespace(sel) && !mentions_reserved(sel)).then(|| l.namespace.clone());
            Arc::new(ScopedSelector {
                selector: sel.clone(),
                namespace,
                pods_only: sel.is_empty(),
            })
        };
        set.limits.push(crate::policy::resolve::NormLimit {
            limit_ref,
            subject: scoped(&l.spec.endpoint_selector),
            peers: l
                .spec
                .from_endpoints
                .as_ref()
                .map(|v| v.iter().map(scoped).collect()),
            port: l.spec.port,
            max: l.spec.max_connections,
            per_identity: l.spec.per_identity.unwrap_or(false),
        });
    }
}
