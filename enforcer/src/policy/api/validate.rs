//! Cilium's semantic checks on a decoded rule, beyond what the types say: selectors, peer
//! combinations, CIDRs, ports and L7 rules; features the lab does not implement reported as
//! [`ErrorKind::Unsupported`]. Every error is located at the field it is about.

use ipnet::IpNet;
use serde_json::Value;

use super::{
    Authentication, CidrRule, Dir, EndpointSelector, Entity, IcmpFamily, IcmpRule, L7Rules,
    MAX_ICMP_FIELDS, MAX_PORTS, Operator, PolicyKind, PortProtocol, PortRule, Protocol, Rule,
    RuleView, ToPorts, icmp_type,
};
use crate::{
    policy::selector,
    yaml::{self, Checker, ErrorKind, UNSUPPORTED_MARK, join_index, join_key, names},
};

/// Checks one rule (written at `path`) of a policy of kind `kind`, adding to `check`'s errors.
pub(super) fn rule(check: &mut Checker<'_>, kind: PolicyKind, path: &str, rule: &Rule) {
    Ctx { check, kind }.rule(path, rule);
}

struct Ctx<'c, 'd> {
    check: &'c mut Checker<'d>,
    kind: PolicyKind,
}

/// The last key of a path, for messages.
fn field_name(path: &str) -> String {
    match yaml::path_segments(path).and_then(|mut s| s.pop()) {
        Some(yaml::Segment::Key(k)) => k,
        _ => path.to_owned(),
    }
}

impl Ctx<'_, '_> {
    fn unsupported(&mut self, path: &str, hint: &str) {
        let what = field_name(path);
        self.unsupported_msg(
            path,
            format!("`{what}` is valid Cilium {UNSUPPORTED_MARK}"),
            hint,
        );
    }

    /// Each of `fields` (under `path`) that is present is unsupported, with the same hint.
    fn unsupported_fields(&mut self, path: &str, fields: [(&str, bool); 2], hint: &str) {
        for (field, present) in fields {
            if present {
                self.unsupported(&join_key(path, field), hint);
            }
        }
    }

    fn unsupported_msg(&mut self, path: &str, message: String, hint: &str) {
        let e = self
            .check
            .doc
            .error(path, message)
            .with_kind(ErrorKind::Unsupported)
            .with_hint(hint);
        self.check.errors.push(e);
    }

    fn rule(&mut self, path: &str, rule: &Rule) {
        let es = join_key(path, "endpointSelector");
        let ns = join_key(path, "nodeSelector");
        match (&rule.endpoint_selector, &rule.node_selector) {
            (None, None) if self.check.suggested.contains(&es) || self.check.suggested.contains(&ns) => {}
            (None, None) => self.check.invalid(
                path,
                "a rule needs an `endpointSelector` (the endpoints it applies to)",
                Some(format!(
                    "write `endpointSelector: {{matchLabels: {{app: my-app}}}}`, or `endpointSelector: {{}}` for every endpoint {}",
                    if self.kind == PolicyKind::Namespaced { "in the namespace" } else { "in the cluster" }
                )),
            ),
            (Some(_), Some(_)) => self.check.invalid(
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
                self.check.invalid(
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
        self.sections(path, rule);
        for (i, r) in rule.peer_rules() {
            self.peer_rule(&join_index(&join_key(path, r.section()), i), &r);
        }
        for (i, l) in rule.labels.iter().flatten().enumerate() {
            let p = join_index(&join_key(path, "labels"), i);
            if l.key.is_empty() {
                self.check.invalid(&p, "a rule label needs a `key`", None);
            } else if self.check.doc.get(&p).is_some_and(Value::is_string) {
                self.check.invalid_value(
                    &p,
                    "a rule label must be a mapping with `key` (and `value`, `source`); the CRD refuses the string form",
                    Some(format!(
                        "write `{{key: {}, value: {}, source: {}}}`",
                        l.key, l.value, l.source
                    )),
                );
            }
        }
    }

    /// A rule needs at least one of the four lists: the CRD requires one to be present, and
    /// Cilium refuses a rule whose lists are all empty.
    fn sections(&mut self, path: &str, rule: &Rule) {
        let lists = [
            rule.ingress.as_ref().map(Vec::len),
            rule.ingress_deny.as_ref().map(Vec::len),
            rule.egress.as_ref().map(Vec::len),
            rule.egress_deny.as_ref().map(Vec::len),
        ];
        const NAMES: [&str; 4] = ["ingress", "ingressDeny", "egress", "egressDeny"];
        if NAMES
            .iter()
            .any(|n| self.check.suggested.contains(&join_key(path, n)))
        {
            return; // a misspelt section was already reported
        }
        let hint = Some(
            "add the rules this policy is for; to deny everything on purpose, write `ingress: [{}]` (or `egress: [{}]`): one empty rule that allows nothing".to_owned(),
        );
        if lists.iter().all(Option::is_none) {
            self.check.invalid(
                path,
                "a rule needs at least one of `ingress`, `ingressDeny`, `egress` or `egressDeny` (the CRD refuses a rule without them)",
                hint,
            );
        } else if lists.iter().flatten().all(|n| *n == 0) {
            self.check.invalid(
                path,
                "every rule list of this rule is empty: Cilium refuses a rule without at least one entry in `ingress`, `ingressDeny`, `egress` or `egressDeny`",
                hint,
            );
        }
    }

    fn selector(&mut self, path: &str, sel: &EndpointSelector) {
        label_selector(self.check, path, sel, selector::validate_selector_key);
    }

    fn selectors(&mut self, path: &str, list: &Option<Vec<EndpointSelector>>) {
        for (i, s) in list.iter().flatten().enumerate() {
            self.selector(&join_index(path, i), s);
        }
    }

    /// Any of the four kinds of rule (ingress/egress, allow/deny).
    fn peer_rule(&mut self, path: &str, r: &RuleView) {
        let f = |what: &str| join_key(path, &r.dir.peer(what));
        self.selectors(&f("Endpoints"), r.endpoints);
        if len(r.requires) > 0 {
            self.check.invalid(
                &f("Requires"),
                format!("`{}` is deprecated and the CRD allows no entries in it", r.dir.peer("Requires")),
                Some("put the requirement into each endpoint selector instead (`matchExpressions` on the label)".into()),
            );
        }
        for (i, e) in r.entities.iter().flatten().enumerate() {
            if matches!(e, Entity::WorldIpv4 | Entity::WorldIpv6) {
                self.check.invalid_value(
                    &join_index(&f("Entities"), i),
                    format!("entity `{e}` is not one the CRD accepts"),
                    Some(match e {
                        Entity::WorldIpv4 => {
                            "use `world`, or `0.0.0.0/0` in a CIDR rule for IPv4 only".into()
                        }
                        _ => "use `world`, or `::/0` in a CIDR rule for IPv6 only".into(),
                    }),
                );
            }
        }
        for (i, c) in r.cidr.iter().flatten().enumerate() {
            self.cidr(&join_index(&f("CIDR"), i), c);
        }
        for (i, c) in r.cidr_set.iter().flatten().enumerate() {
            self.cidr_rule(&join_index(&f("CIDRSet"), i), c);
        }
        if r.groups.is_some() {
            self.unsupported(
                &f("Groups"),
                "cloud provider groups do not exist in the lab; list the addresses with CIDR rules",
            );
        }
        if r.nodes.is_some() {
            self.selectors(&f("Nodes"), r.nodes);
            self.unsupported(
                &f("Nodes"),
                &format!(
                    "use `{}: [host]` or `[remote-node]`",
                    r.dir.peer("Entities")
                ),
            );
        }
        if let Some(services) = r.services {
            self.egress_only(path, services, r.to_ports.count());
        }
        if r.fqdns.is_some_and(Option::is_some) {
            self.unsupported(&f("FQDNs"), "DNS-based rules need a DNS proxy the lab does not have; allow the addresses with `toCIDR` / `toCIDRSet`");
        }
        // Cilium rejects rules that combine two kinds of peer selector.
        let mut present = vec![
            ("Endpoints", len(r.endpoints)),
            ("CIDR", len(r.cidr)),
            ("CIDRSet", len(r.cidr_set)),
            ("Entities", len(r.entities)),
        ];
        present.extend(r.services.map(|s| ("Services", len(s))));
        present.extend(r.fqdns.map(|s| ("FQDNs", len(s))));
        present.extend([("Groups", len(r.groups)), ("Nodes", len(r.nodes))]);
        let used: Vec<String> = present
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, _)| r.dir.peer(what))
            .collect();
        if used.len() > 1 {
            let listed = used
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(" and ");
            self.check.invalid(
                &join_key(path, &used[1]),
                format!("{listed} cannot be combined in one rule"),
                Some(
                    "Cilium rejects this; write one rule per kind of peer (rules are ORed)".into(),
                ),
            );
        }
        let to_ports = join_key(path, "toPorts");
        match r.to_ports {
            ToPorts::Allow(list) => {
                for (i, pr) in list.iter().flatten().enumerate() {
                    self.port_rule(&join_index(&to_ports, i), pr, r.dir);
                }
            }
            ToPorts::Deny(list) => {
                for (i, pr) in list.iter().flatten().enumerate() {
                    self.ports(&join_key(&join_index(&to_ports, i), "ports"), &pr.ports);
                }
            }
        }
        self.icmps(path, r.icmps, r.to_ports.count());
        if let Some(a) = r.authentication {
            self.authentication(&join_key(path, "authentication"), a);
        }
    }

    fn egress_only(&mut self, path: &str, services: &Option<Vec<Value>>, ports: usize) {
        if services.is_some() {
            let p = join_key(path, "toServices");
            self.unsupported(&p, "select the service's pods with `toEndpoints` instead");
            if len(services) > 0 && ports > 0 {
                self.check.invalid(
                    &p,
                    "`toServices` cannot be combined with `toPorts`",
                    Some("Cilium rejects this combination".into()),
                );
            }
        }
    }

    /// `icmps`: the CRD's enum for `family`, a type number or a name of that family (Cilium's
    /// tables), at most 40 fields, and never beside `toPorts` in one rule.
    fn icmps(&mut self, path: &str, icmps: &Option<Vec<IcmpRule>>, ports: usize) {
        let p = join_key(path, "icmps");
        for (i, rule) in icmps.iter().flatten().enumerate() {
            let fields = join_key(&join_index(&p, i), "fields");
            if rule.fields.len() > MAX_ICMP_FIELDS {
                self.check.invalid(
                    &fields,
                    format!(
                        "{} ICMP types in one entry; Cilium allows at most {MAX_ICMP_FIELDS}",
                        rule.fields.len()
                    ),
                    Some("split them over several `icmps` entries".into()),
                );
            }
            for (j, f) in rule.fields.iter().enumerate() {
                let fp = join_index(&fields, j);
                let family = match IcmpFamily::from_field(f.family.as_deref()) {
                    Some(family) => family,
                    None => {
                        let fam = f.family.as_deref().unwrap_or_default();
                        let hint = match yaml::suggest(fam, ["IPv4", "IPv6"]) {
                            Some(s) => format!("write `family: {s}`"),
                            None => "write `family: IPv4` (the default) or `family: IPv6`".into(),
                        };
                        self.check.invalid_value(
                            &join_key(&fp, "family"),
                            format!("ICMP family `{fam}` is not `IPv4` or `IPv6`"),
                            Some(hint),
                        );
                        continue;
                    }
                };
                let tp = join_key(&fp, "type");
                if f.icmp_type.is_null() && self.check.doc.get(&tp).is_none() {
                    self.check.missing(
                        &fp,
                        "type",
                        "missing required field `type`",
                        "write `type: 8` or `type: EchoRequest`",
                    );
                } else if let Err(e) = icmp_type(family, &f.icmp_type) {
                    self.check.invalid_value(&tp, e.message, e.hint);
                }
            }
        }
        if len(icmps) > 0 && ports > 0 {
            self.check.invalid(
                &p,
                "`icmps` cannot be combined with `toPorts` in one rule",
                Some("write a separate rule for the ICMP part (rules are ORed)".into()),
            );
        }
    }

    fn authentication(&mut self, path: &str, a: &Authentication) {
        if !["disabled", "required", "test-always-fail"].contains(&a.mode.as_str()) {
            self.check.invalid_value(
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

    /// A `fromCIDR`/`toCIDR` entry or a CIDR-set prefix (see [`check_cidr`]).
    fn cidr(&mut self, path: &str, text: &str) -> Option<IpNet> {
        match check_cidr(text) {
            Ok(net) => Some(net),
            Err((message, hint)) => {
                self.check.invalid_value(path, message, hint);
                None
            }
        }
    }

    /// A `fromCIDRSet`/`toCIDRSet` entry: exactly one of `cidr`, `cidrGroupRef` (a
    /// CiliumCIDRGroup's name) and `cidrGroupSelector` (its labels), as the CRD's `oneOf` says;
    /// `except` inside `cidr` when a prefix is written (a group's prefixes are known only when
    /// the policy is resolved).
    fn cidr_rule(&mut self, path: &str, rule: &CidrRule) {
        let written: Vec<&str> = ["cidr", "cidrGroupRef", "cidrGroupSelector"]
            .into_iter()
            .filter(|f| self.check.doc.get(&join_key(path, f)).is_some())
            .collect();
        match written.as_slice() {
            [] => {
                self.check.invalid(
                    path,
                    "missing required field `cidr` (or `cidrGroupRef` / `cidrGroupSelector`)",
                    Some("write `cidr: 10.0.0.0/8`, or `cidrGroupRef: my-group` to use the prefixes of a CiliumCIDRGroup".into()),
                );
                return;
            }
            [_] => {}
            [first, rest @ ..] => {
                for f in rest {
                    self.check.invalid(
                        &join_key(path, f),
                        format!("`{first}` and `{f}` cannot be used in the same entry (the CRD takes exactly one of `cidr`, `cidrGroupRef` and `cidrGroupSelector`)"),
                        Some("write one entry per prefix or group".into()),
                    );
                }
            }
        }
        if let Some(name) = &rule.cidr_group_ref
            && let Err(e) = names::dns1123_subdomain(name, "cidrGroupRef")
        {
            self.check
                .invalid_value(&join_key(path, "cidrGroupRef"), e.message, e.hint);
        }
        if let Some(sel) = &rule.cidr_group_selector {
            self.selector(&join_key(path, "cidrGroupSelector"), sel);
        }
        if written[0] != "cidr" {
            for (i, e) in rule.except.iter().flatten().enumerate() {
                self.cidr(&join_index(&join_key(path, "except"), i), e);
            }
            return;
        }
        let Some(net) = self.cidr(&join_key(path, "cidr"), &rule.cidr) else {
            return;
        };
        let net = net.trunc();
        for (i, e) in rule.except.iter().flatten().enumerate() {
            let p = join_index(&join_key(path, "except"), i);
            let Some(ex) = self.cidr(&p, e) else {
                continue;
            };
            if !net.contains(&ex.trunc()) {
                self.check.invalid_value(
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
            self.check.invalid(
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
            self.check.invalid_value(
                &pp_port,
                "`port` must not be empty",
                Some("write a port number; \"0\" means every port".into()),
            );
            PortKind::Invalid
        } else if p.len() > 1 && p.starts_with('0') && p.bytes().all(|b| b.is_ascii_digit()) {
            self.check.invalid_value(
                &pp_port,
                format!("port `{p}` starts with a zero, which Cilium reads as an octal number"),
                Some(format!(
                    "write the port without leading zeros: \"{}\"",
                    p.trim_start_matches('0')
                )),
            );
            PortKind::Invalid
        } else if p.bytes().all(|b| b.is_ascii_digit()) {
            match p.parse::<u32>() {
                Ok(n) if n <= 65535 => PortKind::Number(n as u16),
                _ => {
                    self.check.invalid_value(
                        &pp_port,
                        format!("port `{p}` is out of range"),
                        Some("ports are 0 to 65535; \"0\" means every port".into()),
                    );
                    PortKind::Invalid
                }
            }
        } else if names::is_port_name(p) {
            // Resolved per endpoint from the pods' `containerPorts`.
            PortKind::Named
        } else {
            self.check.invalid_value(
                &pp_port,
                format!("`{p}` is neither a port number (0 to 65535) nor a port name"),
                None,
            );
            PortKind::Invalid
        };
        if let Some(end) = pp.end_port.filter(|e| *e != 0) {
            let ep = join_key(path, "endPort");
            match kind {
                PortKind::Named => self.check.invalid(
                    &ep,
                    "`endPort` needs a numeric `port`",
                    Some("a range is `port: \"8000\"` with `endPort: 8080`".into()),
                ),
                PortKind::Number(0) => self.check.invalid(
                    &ep,
                    "`endPort` cannot be used with port \"0\" (which already means every port)",
                    Some("write the first port of the range in `port`".into()),
                ),
                PortKind::Number(n) if end < n => self.check.invalid_value(
                    &ep,
                    format!("`endPort` {end} is lower than `port` {n}"),
                    Some(format!(
                        "the range is port..=endPort, so endPort must be at least {n}"
                    )),
                ),
                _ => {}
            }
        }
        if let Some(proto) = pp.protocol.filter(|p| !p.has_ports())
            && !matches!(kind, PortKind::Number(0) | PortKind::Invalid)
        {
            // Cilium would key such a port and never match it: the lab's datapath, like
            // Cilium's, sees no ports in these protocols.
            self.check.invalid_value(
                &pp_port,
                format!("{proto} has no ports, so port `{p}` would match no packet"),
                Some(format!(
                    "leave `port` out (or write \"0\") to match every {proto} packet"
                )),
            );
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
                    self.check.invalid_value(
                        &join_index(&p, i),
                        "a server name must not be empty",
                        None,
                    );
                }
            }
            self.unsupported(&p, "TLS SNI matching is not available in the lab");
        }
        if pr.listener.is_some() {
            let p = join_key(path, "listener");
            if dir == Dir::Ingress {
                self.check
                    .invalid(&p, "`listener` is not allowed on ingress", None);
            }
            self.unsupported(&p, "custom Envoy listeners do not exist in the lab");
        }
        self.unsupported_fields(
            path,
            [
                ("originatingTLS", pr.originating_tls.is_some()),
                ("terminatingTLS", pr.terminating_tls.is_some()),
            ],
            "TLS interception is not available in the lab",
        );
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
            self.check.invalid(
                &join_key(path, present[1]),
                format!(
                    "`{}` and `{}` rules cannot share one toPorts entry",
                    present[0], present[1]
                ),
                Some("write one toPorts entry per L7 protocol".into()),
            );
        }
        if rules.l7.is_some() && rules.l7proto.is_none() {
            self.check
                .invalid(&join_key(path, "l7"), "`l7` needs `l7proto`", None);
        }
        self.unsupported_fields(
            path,
            [
                ("kafka", rules.kafka.is_some()),
                ("l7proto", rules.l7proto.is_some()),
            ],
            "only HTTP L7 rules are implemented",
        );
        if rules.dns.is_some() {
            let p = join_key(path, "dns");
            if dir == Dir::Ingress {
                self.check
                    .invalid(&p, "DNS rules are only allowed on egress", None);
            } else {
                self.unsupported(
                    &p,
                    "the lab has no DNS proxy; only HTTP L7 rules are implemented",
                );
            }
        }
        if present.is_empty() && rules.l7.is_none() {
            self.check.invalid(
                path,
                "`rules` needs `http` or `dns` rules (the CRD refuses empty `rules`)",
                Some("remove `rules` to allow every request on these ports, or add `http: [{method: GET, path: \"/\"}]`".into()),
            );
        }
        // Cilium: every L7 rule but DNS applies to TCP only; an absent protocol is ANY. Empty
        // lists are no L7 rules (Cilium's `L7Rules.IsEmpty`).
        let non_empty = rules.http.as_ref().is_some_and(|h| !h.is_empty())
            || rules.kafka.as_ref().is_some_and(|k| !k.is_empty())
            || rules.l7proto.is_some();
        if non_empty && rules.dns.as_ref().is_none_or(Vec::is_empty) {
            for (i, pp) in ports.iter().enumerate() {
                let pp_path = join_index(ports_path, i);
                let proto = pp.protocol.unwrap_or(Protocol::Any);
                if proto == Protocol::Tcp {
                    continue;
                }
                let message =
                    format!("L7 rules can only apply to TCP (not {proto}) except for DNS rules");
                if pp.protocol.is_some() {
                    self.check.invalid_value(
                        &join_key(&pp_path, "protocol"),
                        message,
                        Some("write `protocol: TCP`, or move the L7 rules to a toPorts entry of TCP ports".into()),
                    );
                } else {
                    self.check.invalid(
                        &pp_path,
                        format!("{message}; without `protocol` the port is ANY"),
                        Some("add `protocol: TCP` to this port".into()),
                    );
                }
            }
        }
        let Some(http) = rules.http.as_ref().filter(|h| !h.is_empty()) else {
            return;
        };
        // Cilium: L7 rules need explicit ports, and no port 0.
        if ports.is_empty() {
            self.check.invalid(
                path,
                "L7 rules need explicit ports",
                Some("add `ports: [{port: \"80\", protocol: TCP}]` to this toPorts entry".into()),
            );
        }
        for (i, kind) in kinds.iter().enumerate() {
            let pp_path = join_index(ports_path, i);
            if *kind == PortKind::Number(0) {
                self.check.invalid_value(
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
                    self.check.invalid_value(
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
                    self.check.invalid_value(
                        &hp,
                        "a header entry must not be empty",
                        Some(
                            "write `Name` (must be present) or `Name: value` (must be equal)"
                                .into(),
                        ),
                    );
                } else if name.is_empty() || !name.bytes().all(is_token_char) {
                    self.check.invalid_value(
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

/// A CIDR as the CRD's `cidr` format takes it: an IPv4 or IPv6 address with a prefix length (a
/// bare address is refused). The error is the message and a hint.
pub(crate) fn check_cidr(text: &str) -> Result<IpNet, (String, Option<String>)> {
    let example = Some(
        "write an address with a prefix length, such as `10.0.0.0/8` or `2001:db8::/32`".to_owned(),
    );
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
        return Err((
            format!("`{text}` is not a valid CIDR: `{addr}` is not an IP address"),
            example,
        ));
    };
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let bits = match len {
        None => {
            return Err((
                format!("`{text}` needs a prefix length (the CRD accepts only CIDR notation)"),
                Some(format!("write `{text}/{max}` for a single address")),
            ));
        }
        Some(l) => match l.parse::<u8>() {
            Ok(b) if b <= max && l.bytes().all(|c| c.is_ascii_digit()) => b,
            _ => {
                return Err((
                    format!(
                        "`{text}` is not a valid CIDR: the prefix length must be 0 to {max} for {family}"
                    ),
                    example,
                ));
            }
        },
    };
    IpNet::new(ip, bits).map_err(|e| (format!("`{text}` is not a valid CIDR: {e}"), example))
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

/// A label selector's keys (by `key_ok`: Cilium's, with source prefixes, or Kubernetes'),
/// values and operators, for Cilium's endpoint selectors and NetworkPolicy's label selectors.
pub(super) fn label_selector(
    check: &mut Checker<'_>,
    path: &str,
    sel: &EndpointSelector,
    key_ok: fn(&str) -> Result<(), names::NameError>,
) {
    let ml = join_key(path, "matchLabels");
    for (key, value) in sel.match_labels.iter().flatten() {
        let p = join_key(&ml, key);
        if let Err(e) = key_ok(key) {
            check.invalid(&p, e.message, e.hint);
        }
        if let Err(e) = selector::validate_label_value(value) {
            check.invalid_value(&p, e.message, e.hint);
        }
    }
    let me = join_key(path, "matchExpressions");
    for (i, req) in sel.match_expressions.iter().flatten().enumerate() {
        let p = join_index(&me, i);
        if let Err(e) = key_ok(&req.key) {
            check.invalid_value(&join_key(&p, "key"), e.message, e.hint);
        }
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator {
            Operator::In | Operator::NotIn if values.is_empty() => check.invalid(
                &p,
                format!(
                    "operator `{:?}` needs at least one entry in `values`",
                    req.operator
                ),
                Some("add `values: [a, b]`, or use `Exists` / `DoesNotExist`".into()),
            ),
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => check.invalid(
                &join_key(&p, "values"),
                format!("operator `{:?}` takes no `values`", req.operator),
                Some("remove `values`, or use `In` / `NotIn` to compare values".into()),
            ),
            _ => {}
        }
        for (j, v) in values.iter().enumerate() {
            if let Err(e) = selector::validate_label_value(v) {
                check.invalid_value(&join_index(&join_key(&p, "values"), j), e.message, e.hint);
            }
        }
    }
}
