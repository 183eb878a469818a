//! Kubernetes `NetworkPolicy` (`networking.k8s.io/v1`): decoded, checked as the API server
//! checks it, and turned into the one Cilium rule Cilium itself makes of it
//! (`pkg/k8s/network_policy.go`), so that it combines with CiliumNetworkPolicies exactly as in
//! a cluster running Cilium:
//!
//! - the subject is `podSelector` in the policy's namespace; every rule of the policy is an
//!   allow rule that puts its direction in default deny;
//! - each `ingress[i]` / `egress[i]` becomes the Cilium rule at the same index (so flows name
//!   the line the user wrote): its peers are OR-ed, its `ports` apply to all of them;
//! - a peer with only `podSelector` selects pods of the policy's namespace; with
//!   `namespaceSelector` the namespaces by their labels (`{}`: every namespace), AND-ed with
//!   `podSelector` when both are given; `ipBlock` is a CIDR set (it selects addresses outside
//!   the cluster, never pods: Cilium gives pods their label identity, not a CIDR one);
//! - an empty or missing `from` / `to` matches every peer, inside and outside the cluster;
//! - `policyTypes`: a direction with no rules is default deny when it is listed (ingress also
//!   when `policyTypes` is absent, or lists no `Egress`). As in Cilium, rules written for a
//!   direction apply even when `policyTypes` leaves it out (`lab audit` says so);
//! - a port without `protocol` is TCP (the API server's default); without `port`, every port
//!   of the protocol; a named port is resolved from the pods' `containerPorts`.

use serde::{Deserialize, de::IgnoredAny};
use serde_json::Value;

use super::{
    CidrRule, DefaultDeny, EgressRule, EndpointSelector, Entity, IngressRule,
    LabelSelectorRequirement, Operator, PolicyDoc, PolicyKind, PortProtocol, PortRule, Protocol,
    Rule,
};
use crate::{
    policy::selector,
    yaml::{Checker, Document, Located, NameRule, ObjectMeta, join_index, join_key, names},
};

pub const API_VERSION: &str = "networking.k8s.io/v1";

/// The label Cilium gives every pod with its namespace.
const NAMESPACE_LABEL: &str = "k8s:io.kubernetes.pod.namespace";
/// The prefix of the labels Cilium copies from a pod's namespace.
const NAMESPACE_META: &str = "k8s:io.cilium.k8s.namespace.labels";
/// The cluster label Cilium adds to NetworkPolicy peers (the lab's cluster is `default`).
const CLUSTER_LABEL: &str = "k8s:io.cilium.k8s.policy.cluster";
const CLUSTER: &str = "default";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NetworkPolicyObject {
    #[serde(rename = "apiVersion")]
    _api_version: Option<IgnoredAny>,
    #[serde(rename = "kind")]
    _kind: Option<IgnoredAny>,
    metadata: Option<ObjectMeta>,
    spec: Option<NetworkPolicySpec>,
    /// Written by the API server; accepted and ignored.
    #[serde(rename = "status")]
    _status: Option<IgnoredAny>,
}

/// `spec` of a NetworkPolicy, field for field.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    pub pod_selector: Option<EndpointSelector>,
    pub ingress: Option<Vec<NetpolIngressRule>>,
    pub egress: Option<Vec<NetpolEgressRule>>,
    pub policy_types: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetpolIngressRule {
    pub from: Option<Vec<NetpolPeer>>,
    pub ports: Option<Vec<NetpolPort>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetpolEgressRule {
    pub to: Option<Vec<NetpolPeer>>,
    pub ports: Option<Vec<NetpolPort>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetpolPeer {
    pub pod_selector: Option<EndpointSelector>,
    pub namespace_selector: Option<EndpointSelector>,
    pub ip_block: Option<IpBlock>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpBlock {
    #[serde(default)]
    pub cidr: String,
    pub except: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetpolPort {
    pub protocol: Option<String>,
    /// A number or a port name (Kubernetes' IntOrString).
    pub port: Option<Value>,
    pub end_port: Option<i64>,
}

/// The port of an entry once checked.
#[derive(Clone, Debug, PartialEq)]
enum PortValue {
    Any,
    Number(u16),
    Name(String),
}

/// Decodes and checks a NetworkPolicy document (kind and apiVersion already recognised) and
/// turns it into the Cilium rule it stands for. Returns the policy when it could be built and
/// every error.
pub fn check_document(doc: &Document) -> (Option<PolicyDoc>, Vec<Located>) {
    let kind = PolicyKind::Kubernetes;
    let mut decoded = doc.decode_all::<NetworkPolicyObject>("");
    let repaired = !decoded.errors.is_empty();
    let mut check = Checker::from_decoded(doc, &mut decoded);
    let Some(obj) = decoded.value else {
        return (None, check.into_errors());
    };
    if !decoded.paths_exact {
        return (None, check.into_errors());
    }
    let meta = obj.metadata.unwrap_or_default();
    if doc.get("metadata").is_none() {
        check.missing(
            "",
            "metadata",
            "a NetworkPolicy needs `metadata` with a `name`",
            "add `metadata:` with `name: my-policy`",
        );
    } else {
        check.metadata(&meta, NameRule::Subdomain, true, kind.as_str());
    }
    let Some(spec) = obj.spec else {
        if !check.suggested.contains("spec") {
            check.invalid(
                "",
                "a NetworkPolicy needs a `spec`",
                Some("add `spec:` with a `podSelector` (`{}` selects every pod of the namespace) and `ingress`/`egress` rules or `policyTypes`".into()),
            );
        }
        return (None, check.into_errors());
    };
    let ports = Checks { check: &mut check }.spec(&spec);
    super::parse::yaml11_booleans(&mut check, doc, "the API server expects");
    let errors = check.into_errors();
    let Some(name) = meta.name.filter(|_| !repaired && errors.is_empty()) else {
        return (None, errors);
    };
    let namespace = meta.namespace.unwrap_or_else(|| "default".into());
    let rule = translate(&spec, &namespace, &ports);
    let policy = PolicyDoc {
        kind,
        name,
        namespace: Some(namespace),
        labels: meta.labels.unwrap_or_default(),
        annotations: meta.annotations.unwrap_or_default(),
        rules: vec![rule],
        source: doc.source_ref(),
        raw: doc.value.clone(),
        locations: doc.locations.clone(),
    };
    (Some(policy), errors)
}

/// The checked ports of every rule: `ingress[i].ports` then `egress[i].ports`.
#[derive(Default)]
struct CheckedPorts {
    ingress: Vec<Vec<(PortValue, Option<u16>, Protocol)>>,
    egress: Vec<Vec<(PortValue, Option<u16>, Protocol)>>,
}

struct Checks<'c, 'd> {
    check: &'c mut Checker<'d>,
}

impl Checks<'_, '_> {
    fn spec(&mut self, spec: &NetworkPolicySpec) -> CheckedPorts {
        match &spec.pod_selector {
            Some(sel) => self.selector("spec.podSelector", sel),
            None => self.check.missing(
                "spec",
                "podSelector",
                "`spec.podSelector` is required",
                "write `podSelector: {}` to select every pod of the namespace, or `podSelector: {matchLabels: {app: web}}`",
            ),
        }
        let mut seen = Vec::new();
        for (i, t) in spec.policy_types.iter().flatten().enumerate() {
            let p = join_index("spec.policyTypes", i);
            if t != "Ingress" && t != "Egress" {
                let hint = match names_suggest(t) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "the policy types are `Ingress` and `Egress`".into(),
                };
                self.check
                    .invalid_value(&p, format!("unsupported policy type `{t}`"), Some(hint));
            } else if seen.contains(&t) {
                self.check
                    .invalid_value(&p, format!("`{t}` is listed twice"), None);
            }
            seen.push(t);
        }
        let mut out = CheckedPorts::default();
        for (i, r) in spec.ingress.iter().flatten().enumerate() {
            let p = join_index("spec.ingress", i);
            self.peers(&join_key(&p, "from"), r.from.as_deref());
            out.ingress
                .push(self.ports(&join_key(&p, "ports"), r.ports.as_deref()));
        }
        for (i, r) in spec.egress.iter().flatten().enumerate() {
            let p = join_index("spec.egress", i);
            self.peers(&join_key(&p, "to"), r.to.as_deref());
            out.egress
                .push(self.ports(&join_key(&p, "ports"), r.ports.as_deref()));
        }
        out
    }

    fn peers(&mut self, path: &str, peers: Option<&[NetpolPeer]>) {
        for (i, peer) in peers.into_iter().flatten().enumerate() {
            let p = join_index(path, i);
            let selectors = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
            match (selectors, &peer.ip_block) {
                (false, None) => self.check.invalid(
                    &p,
                    "a peer must name `podSelector`, `namespaceSelector` or `ipBlock`",
                    Some("`- podSelector: {}` is every pod of the namespace; leave the whole `from`/`to` out to allow every peer".into()),
                ),
                (true, Some(_)) => self.check.invalid(
                    &join_key(&p, "ipBlock"),
                    "`ipBlock` cannot be combined with `podSelector` or `namespaceSelector` in one peer",
                    Some("write the ipBlock as a peer of its own: a new `- ipBlock:` item".into()),
                ),
                _ => {}
            }
            if let Some(s) = &peer.pod_selector {
                self.selector(&join_key(&p, "podSelector"), s);
            }
            if let Some(s) = &peer.namespace_selector {
                self.selector(&join_key(&p, "namespaceSelector"), s);
            }
            if let Some(b) = &peer.ip_block {
                self.ip_block(&join_key(&p, "ipBlock"), b);
            }
        }
    }

    /// Kubernetes' label selector rules (no Cilium source prefixes here).
    fn selector(&mut self, path: &str, sel: &EndpointSelector) {
        super::validate::label_selector(self.check, path, sel, selector::validate_k8s_label_key);
    }

    fn ip_block(&mut self, path: &str, b: &IpBlock) {
        let cidr_path = join_key(path, "cidr");
        if b.cidr.is_empty() {
            self.check.invalid(
                path,
                "`ipBlock` needs a `cidr`",
                Some("for example `cidr: 192.0.2.0/24`".into()),
            );
            return;
        }
        let Some(outer) = self.cidr(&cidr_path, &b.cidr) else {
            return;
        };
        for (i, e) in b.except.iter().flatten().enumerate() {
            let p = join_index(&join_key(path, "except"), i);
            let Some(inner) = self.cidr(&p, e) else {
                continue;
            };
            let strict_subset = inner.prefix_len() > outer.prefix_len()
                && outer.contains(&inner.network())
                && std::mem::discriminant(&inner) == std::mem::discriminant(&outer);
            if !strict_subset {
                self.check.invalid_value(
                    &p,
                    format!("`{e}` must be a strict subset of `cidr` {}", b.cidr),
                    Some(format!(
                        "an exception carves a smaller block out of {}; remove it or fix the prefix",
                        b.cidr
                    )),
                );
            }
        }
    }

    fn cidr(&mut self, path: &str, text: &str) -> Option<ipnet::IpNet> {
        match text.parse::<ipnet::IpNet>() {
            Ok(net) => Some(net),
            Err(_) => {
                let hint = if text.parse::<std::net::IpAddr>().is_ok() {
                    format!("a CIDR needs a prefix length: `{text}/32` for one IPv4 address")
                } else {
                    "write a CIDR such as `192.0.2.0/24`".into()
                };
                self.check
                    .invalid_value(path, format!("`{text}` is not a valid CIDR"), Some(hint));
                None
            }
        }
    }

    fn ports(
        &mut self,
        path: &str,
        ports: Option<&[NetpolPort]>,
    ) -> Vec<(PortValue, Option<u16>, Protocol)> {
        let mut out = Vec::new();
        for (i, np) in ports.into_iter().flatten().enumerate() {
            let p = join_index(path, i);
            let protocol = match np.protocol.as_deref() {
                None | Some("TCP") => Protocol::Tcp,
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                Some(other) => {
                    let upper = other.to_ascii_uppercase();
                    let hint = if ["TCP", "UDP", "SCTP"].contains(&upper.as_str()) {
                        format!("write it in capitals: `{upper}`")
                    } else {
                        "NetworkPolicy ports take `TCP`, `UDP` or `SCTP` (a CiliumNetworkPolicy can also match ICMP)".into()
                    };
                    self.check.invalid_value(
                        &join_key(&p, "protocol"),
                        format!("unsupported protocol `{other}`"),
                        Some(hint),
                    );
                    Protocol::Tcp
                }
            };
            let port_path = join_key(&p, "port");
            let port = match &np.port {
                None => PortValue::Any,
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(n @ 1..=65535) => PortValue::Number(n as u16),
                    _ => {
                        self.check.invalid_value(
                            &port_path,
                            format!("port `{n}` is out of range"),
                            Some(
                                "ports are 1 to 65535; leave `port` out to allow every port".into(),
                            ),
                        );
                        PortValue::Any
                    }
                },
                Some(Value::String(s))
                    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    self.check.invalid_value(
                        &port_path,
                        format!("`\"{s}\"` is a string, so Kubernetes reads it as a port name, and a port name must contain a letter"),
                        Some(format!("write the number without quotes: `port: {s}`")),
                    );
                    PortValue::Any
                }
                Some(Value::String(s)) => match names::port_name(s, true) {
                    Ok(()) => PortValue::Name(s.clone()),
                    Err(e) => {
                        self.check.invalid_value(&port_path, e.message, e.hint);
                        PortValue::Any
                    }
                },
                Some(_) => {
                    self.check.invalid_value(
                        &port_path,
                        "`port` must be a number or a port name",
                        Some("for example `port: 8080` or `port: http`".into()),
                    );
                    PortValue::Any
                }
            };
            let mut end = None;
            if let Some(e) = np.end_port {
                let ep = join_key(&p, "endPort");
                match &port {
                    PortValue::Number(n) if e >= i64::from(*n) && e <= 65535 => {
                        end = Some(e as u16)
                    }
                    PortValue::Number(n) if e < i64::from(*n) => self.check.invalid_value(
                        &ep,
                        format!("`endPort` {e} is lower than `port` {n}"),
                        Some(format!(
                            "the range is port..endPort, so endPort must be at least {n}"
                        )),
                    ),
                    PortValue::Number(_) => self.check.invalid_value(
                        &ep,
                        format!("`endPort` {e} is out of range"),
                        Some("ports are 1 to 65535".into()),
                    ),
                    PortValue::Name(_) => self.check.invalid(
                        &ep,
                        "`endPort` may not be given when `port` is a name",
                        Some("a range is `port: 8000` with `endPort: 8080`".into()),
                    ),
                    PortValue::Any => self.check.invalid(
                        &ep,
                        "`endPort` needs a numeric `port`",
                        Some("a range is `port: 8000` with `endPort: 8080`".into()),
                    ),
                }
            }
            out.push((port, end, protocol));
        }
        out
    }
}

fn names_suggest(t: &str) -> Option<&'static str> {
    crate::yaml::suggest(t, ["Ingress", "Egress"])
}

/// The Cilium rule Cilium makes of a checked NetworkPolicy.
fn translate(spec: &NetworkPolicySpec, namespace: &str, ports: &CheckedPorts) -> Rule {
    let types = spec.policy_types.as_deref().unwrap_or_default();
    let has = |t: &str| types.iter().any(|x| x == t);
    let ingress: Vec<IngressRule> = spec
        .ingress
        .iter()
        .flatten()
        .zip(&ports.ingress)
        .map(|(r, p)| {
            let (endpoints, cidrs, all) = peers(r.from.as_deref(), namespace);
            IngressRule {
                from_endpoints: endpoints,
                from_cidr_set: cidrs,
                from_entities: all,
                to_ports: port_rules(p),
                ..Default::default()
            }
        })
        .collect();
    let egress: Vec<EgressRule> = spec
        .egress
        .iter()
        .flatten()
        .zip(&ports.egress)
        .map(|(r, p)| {
            let (endpoints, cidrs, all) = peers(r.to.as_deref(), namespace);
            EgressRule {
                to_endpoints: endpoints,
                to_cidr_set: cidrs,
                to_entities: all,
                to_ports: port_rules(p),
                ..Default::default()
            }
        })
        .collect();
    let ingress_default_deny = ingress.is_empty() && (has("Ingress") || !has("Egress"));
    let egress_default_deny = egress.is_empty() && has("Egress");
    let mut subject = spec.pod_selector.clone().unwrap_or_default();
    subject
        .match_labels
        .get_or_insert_default()
        .insert(NAMESPACE_LABEL.into(), namespace.into());
    Rule {
        endpoint_selector: Some(subject),
        ingress: (!ingress.is_empty()).then_some(ingress),
        egress: (!egress.is_empty()).then_some(egress),
        enable_default_deny: (ingress_default_deny || egress_default_deny).then(|| DefaultDeny {
            ingress: ingress_default_deny.then_some(true),
            egress: egress_default_deny.then_some(true),
        }),
        ..Default::default()
    }
}

type Peers = (
    Option<Vec<EndpointSelector>>,
    Option<Vec<CidrRule>>,
    Option<Vec<Entity>>,
);

/// A rule's peers: an empty or missing list is every peer (entity `all`).
fn peers(list: Option<&[NetpolPeer]>, namespace: &str) -> Peers {
    let list = list.unwrap_or_default();
    if list.is_empty() {
        return (None, None, Some(vec![Entity::All]));
    }
    let mut endpoints = Vec::new();
    let mut cidrs = Vec::new();
    for peer in list {
        if let Some(b) = &peer.ip_block {
            cidrs.push(CidrRule {
                cidr: b.cidr.clone(),
                except: b.except.clone(),
                ..Default::default()
            });
        } else {
            endpoints.push(peer_selector(peer, namespace));
        }
    }
    (Some(endpoints), (!cidrs.is_empty()).then_some(cidrs), None)
}

/// One peer's selector, as Cilium builds it: the pod selector limited to the lab's cluster, and
/// to the policy's namespace unless a namespace selector (on the namespaces' labels) is given.
fn peer_selector(peer: &NetpolPeer, namespace: &str) -> EndpointSelector {
    let mut sel = peer.pod_selector.clone().unwrap_or_default();
    let labels = sel.match_labels.get_or_insert_default();
    labels
        .entry(CLUSTER_LABEL.into())
        .or_insert_with(|| CLUSTER.into());
    match &peer.namespace_selector {
        None => {
            labels.insert(NAMESPACE_LABEL.into(), namespace.into());
        }
        Some(ns) => {
            for (k, v) in ns.match_labels.iter().flatten() {
                labels.insert(format!("{NAMESPACE_META}.{k}"), v.clone());
            }
            let exprs = sel.match_expressions.get_or_insert_default();
            for r in ns.match_expressions.iter().flatten() {
                exprs.push(LabelSelectorRequirement {
                    key: format!("{NAMESPACE_META}.{}", r.key),
                    ..r.clone()
                });
            }
            if ns.is_empty() {
                exprs.push(LabelSelectorRequirement {
                    key: NAMESPACE_LABEL.into(),
                    operator: Operator::Exists,
                    values: None,
                });
            }
        }
    }
    sel
}

fn port_rules(ports: &[(PortValue, Option<u16>, Protocol)]) -> Option<Vec<PortRule>> {
    if ports.is_empty() {
        return None;
    }
    Some(
        ports
            .iter()
            .map(|(port, end, protocol)| PortRule {
                ports: Some(vec![PortProtocol {
                    port: match port {
                        PortValue::Any => "0".into(),
                        PortValue::Number(n) => n.to_string(),
                        PortValue::Name(s) => s.clone(),
                    },
                    end_port: *end,
                    protocol: Some(*protocol),
                }]),
                ..Default::default()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        policy::accept::accept_source,
        yaml::{Source, parse_documents},
    };

    fn check(text: &str) -> (Option<PolicyDoc>, Vec<Located>) {
        let docs = parse_documents(&Source::new("np.yaml", text)).unwrap();
        super::super::check_policy_document(&docs[0])
    }

    const HEAD: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\n  namespace: x\nspec:\n";

    #[test]
    fn translates_as_cilium_does() {
        let text = format!(
            "{HEAD}  podSelector:\n    matchLabels: {{pod: a}}\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{pod: b}}}}\n    - namespaceSelector: {{matchLabels: {{ns: \"y\"}}}}\n    - ipBlock: {{cidr: 192.0.2.0/24, except: [192.0.2.128/25]}}\n    ports:\n    - port: 80\n    - {{protocol: UDP, port: serve-81-udp}}\n  - {{}}\n  egress:\n  - ports:\n    - {{port: 8000, endPort: 8080}}\n"
        );
        let (p, e) = check(&text);
        assert!(e.is_empty(), "{e:?}");
        let p = p.unwrap();
        assert_eq!(p.kind, PolicyKind::Kubernetes);
        assert_eq!(p.namespace.as_deref(), Some("x"));
        let rule = &p.rules[0];
        let subject = rule.endpoint_selector.as_ref().unwrap();
        assert_eq!(subject.match_labels.as_ref().unwrap()[NAMESPACE_LABEL], "x");
        let ingress = rule.ingress.as_ref().unwrap();
        let eps = ingress[0].from_endpoints.as_ref().unwrap();
        // The pod selector is kept to the policy's namespace; the namespace selector is not.
        assert_eq!(eps[0].match_labels.as_ref().unwrap()[NAMESPACE_LABEL], "x");
        let ns = eps[1].match_labels.as_ref().unwrap();
        assert_eq!(ns[&format!("{NAMESPACE_META}.ns")], "y");
        assert!(!ns.contains_key(NAMESPACE_LABEL));
        let cidrs = ingress[0].from_cidr_set.as_ref().unwrap();
        assert_eq!(
            cidrs[0].except.as_deref(),
            Some(&["192.0.2.128/25".to_string()][..])
        );
        let ports = ingress[0].to_ports.as_ref().unwrap();
        assert_eq!(ports.len(), 2);
        let first = &ports[0].ports.as_ref().unwrap()[0];
        assert_eq!(
            (first.port.as_str(), first.protocol),
            ("80", Some(Protocol::Tcp))
        );
        let named = &ports[1].ports.as_ref().unwrap()[0];
        assert_eq!(
            (named.port.as_str(), named.protocol),
            ("serve-81-udp", Some(Protocol::Udp))
        );
        // `- {}`: every peer, every port.
        assert_eq!(ingress[1].from_entities, Some(vec![Entity::All]));
        assert!(ingress[1].to_ports.is_none());
        let egress = rule.egress.as_ref().unwrap();
        let range = &egress[0].to_ports.as_ref().unwrap()[0]
            .ports
            .as_ref()
            .unwrap()[0];
        assert_eq!((range.port.as_str(), range.end_port), ("8000", Some(8080)));
        assert!(rule.enable_default_deny.is_none());
    }

    #[test]
    fn policy_types_default_deny() {
        // No rules, no policyTypes: ingress default deny only.
        let (p, _) = check(&format!("{HEAD}  podSelector: {{}}\n"));
        let dd = p.unwrap().rules[0].enable_default_deny.clone().unwrap();
        assert_eq!((dd.ingress, dd.egress), (Some(true), None));
        // Egress only.
        let (p, _) = check(&format!(
            "{HEAD}  podSelector: {{}}\n  policyTypes: [Egress]\n"
        ));
        let dd = p.unwrap().rules[0].enable_default_deny.clone().unwrap();
        assert_eq!((dd.ingress, dd.egress), (None, Some(true)));
        // Both; an egress rule present keeps egress to its rules.
        let (p, _) = check(&format!(
            "{HEAD}  podSelector: {{}}\n  policyTypes: [Ingress, Egress]\n  egress:\n  - to:\n    - podSelector: {{}}\n"
        ));
        let dd = p.unwrap().rules[0].enable_default_deny.clone().unwrap();
        assert_eq!((dd.ingress, dd.egress), (Some(true), None));
    }

    #[test]
    fn refuses_what_the_api_server_refuses() {
        let text = format!(
            "{HEAD}  podSelector:\n    matchLabels: {{k8s:pod: a}}\n  policyTypes: [ingress]\n  ingress:\n  - from:\n    - podSelector: {{}}\n      ipBlock: {{cidr: 10.0.0.0/8}}\n    - ipBlock: {{cidr: 10.0.0.0/8, except: [192.0.2.0/24]}}\n    - {{}}\n    ports:\n    - port: \"80\"\n    - {{port: http, endPort: 90}}\n    - {{protocol: tcp, port: 81}}\n    - {{port: 8080, endPort: 80}}\n"
        );
        let (p, e) = check(&text);
        assert!(p.is_none());
        let messages: Vec<String> = e
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        let has = |field: &str, text: &str| {
            assert!(
                e.iter()
                    .any(|e| e.field == field && e.message.contains(text)),
                "no error at {field} with {text:?}: {messages:#?}"
            );
        };
        assert!(
            e.iter()
                .any(|e| e.field.starts_with("spec.podSelector.matchLabels")),
            "a Cilium source prefix is not a Kubernetes label key: {messages:#?}"
        );
        has("spec.policyTypes[0]", "unsupported policy type");
        has("spec.ingress[0].from[0].ipBlock", "cannot be combined");
        has("spec.ingress[0].from[1].ipBlock.except[0]", "strict subset");
        has("spec.ingress[0].from[2]", "must name");
        has("spec.ingress[0].ports[0].port", "port name");
        has("spec.ingress[0].ports[1].endPort", "is a name");
        has(
            "spec.ingress[0].ports[2].protocol",
            "unsupported protocol `tcp`",
        );
        has("spec.ingress[0].ports[3].endPort", "lower than");
        let hint = e
            .iter()
            .find(|e| e.field == "spec.policyTypes[0]")
            .and_then(|e| e.hint.clone());
        assert_eq!(hint.as_deref(), Some("did you mean `Ingress`?"));
    }

    #[test]
    fn an_unquoted_y_is_a_boolean_for_kubectl() {
        let (p, e) = check(&format!(
            "{HEAD}  podSelector: {{}}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels: {{ns: y}}\n"
        ));
        assert!(p.is_none());
        assert_eq!(e[0].hint.as_deref(), Some("quote it: `ns: \"y\"`"), "{e:?}");
    }

    #[test]
    fn missing_pod_selector_and_wrong_api_version() {
        let (_, e) = check(&format!("{HEAD}  ingress: []\n"));
        assert!(e[0].message.contains("podSelector"), "{e:?}");
        let (_, e) = check(&HEAD.replace("networking.k8s.io/v1", "cilium.io/v2"));
        assert!(
            e.iter()
                .any(|e| e.hint.as_deref() == Some("write `apiVersion: networking.k8s.io/v1`")),
            "{e:?}"
        );
    }

    #[test]
    fn accepted_beside_cilium_policies() {
        let text = format!(
            "{HEAD}  podSelector: {{}}\n  ingress:\n  - {{}}\n---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: np\n  namespace: x\nspec:\n  endpointSelector: {{}}\n  egress:\n  - {{}}\n"
        );
        let policies = accept_source(&Source::new("both.yaml", &text))
            .unwrap()
            .policies;
        assert_eq!(policies.len(), 2, "same name, different kinds");
        let rules = crate::policy::normalize::normalize(&policies).unwrap();
        let kinds: Vec<&str> = rules
            .table
            .iter()
            .skip(1)
            .map(|r| r.kind.as_str())
            .collect();
        assert!(kinds.contains(&"NetworkPolicy"), "{kinds:?}");
    }
}
