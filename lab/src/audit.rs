//! `lab audit`: the checks that would have caught the 72-hour exposure before it shipped, over
//! policy files, over the running lab, or both. Each finding says how serious it is, where it
//! is (file and line, or the live object), why it matters and what to do instead.

use std::collections::BTreeMap;

use enforcer::{
    identity::{Identities, pod_labels},
    policy::{
        api::{CidrRule, Entity, PolicyDoc, PolicyKind},
        cidrgroup::CidrGroupDoc,
        normalize::{normalize_with_groups, parse_cidr},
        resolve::{EndpointRef, MapKey, Verdict, resolve},
    },
};

use crate::cluster::{PodSpec, ServiceSpec, ServiceType};

pub use model::{Finding, Severity};

/// Everything the audit looks at.
#[derive(Default)]
pub struct Input {
    pub policies: Vec<PolicyDoc>,
    /// The CiliumCIDRGroups the policies may name.
    pub groups: Vec<CidrGroupDoc>,
    pub pods: Vec<PodSpec>,
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub services: Vec<ServiceSpec>,
    /// NodePorts the prefilter lets skip policy.
    pub bypassed_node_ports: Vec<u16>,
    /// Whether pods are known (live lab or manifests): checks about selection need them.
    pub know_pods: bool,
}

/// A pod counts as meant to be public with the label `exposure: public` (or `public: "true"`).
fn is_public(labels: &BTreeMap<String, String>) -> bool {
    labels.get("exposure").map(String::as_str) == Some("public")
        || labels.get("public").map(String::as_str) == Some("true")
}

fn loc(doc: &PolicyDoc, path: &str) -> String {
    let (line, _) = doc.locations.line_of(path).unwrap_or((doc.source.line, 1));
    format!("{}:{line} ({path})", doc.source.file)
}

fn spec_path(doc: &PolicyDoc, i: usize) -> String {
    let has_spec = doc.raw.get("spec").is_some();
    if has_spec && i == 0 {
        "spec".into()
    } else {
        format!("specs[{}]", i - usize::from(has_spec))
    }
}

pub fn audit(input: &Input) -> Vec<Finding> {
    let mut out = Vec::new();
    let pod_selected =
        |doc: &PolicyDoc, sel: &enforcer::policy::api::EndpointSelector, pod: &PodSpec| {
            let ns_labels = input
                .namespaces
                .get(&pod.namespace)
                .cloned()
                .unwrap_or_default();
            let labels = pod_labels(
                &pod.namespace,
                &pod.labels,
                &ns_labels,
                &pod.service_account,
            );
            if doc.kind == PolicyKind::Namespaced
                && doc.namespace.as_deref() != Some(pod.namespace.as_str())
            {
                return false;
            }
            sel.matches(&enforcer::policy::selector::Labels(labels))
        };

    for doc in &input.policies {
        for (i, rule) in doc.rules.iter().enumerate() {
            let base = spec_path(doc, i);
            let sections = [
                rule.ingress
                    .iter()
                    .flatten()
                    .map(|r| (&r.from_cidr, &r.from_cidr_set))
                    .collect::<Vec<_>>(),
                rule.ingress_deny
                    .iter()
                    .flatten()
                    .map(|r| (&r.from_cidr, &r.from_cidr_set))
                    .collect(),
                rule.egress
                    .iter()
                    .flatten()
                    .map(|r| (&r.to_cidr, &r.to_cidr_set))
                    .collect(),
                rule.egress_deny
                    .iter()
                    .flatten()
                    .map(|r| (&r.to_cidr, &r.to_cidr_set))
                    .collect(),
            ];
            let names = [
                ("ingress", "fromCIDR"),
                ("ingressDeny", "fromCIDR"),
                ("egress", "toCIDR"),
                ("egressDeny", "toCIDR"),
            ];
            for (rules, (section, field)) in sections.iter().zip(names) {
                for (j, (cidrs, sets)) in rules.iter().enumerate() {
                    let path = format!("{base}.{section}[{j}]");
                    let listed = cidrs
                        .iter()
                        .flatten()
                        .enumerate()
                        .map(|(k, c)| (format!("{path}.{field}[{k}]"), c));
                    let in_sets = sets
                        .iter()
                        .flatten()
                        .enumerate()
                        .map(|(k, s)| (format!("{path}.{field}Set[{k}].cidr"), &s.cidr));
                    for (at, cidr) in listed.chain(in_sets) {
                        if cidr.contains(':') {
                            out.push(ipv6_finding(doc, &at, cidr));
                        }
                    }
                    for (k, set) in sets.iter().flatten().enumerate() {
                        let at = format!("{path}.{field}Set[{k}]");
                        out.extend(missing_group(doc, &at, set, &input.groups));
                    }
                }
            }
            out.extend(icmpv6_findings(doc, &base, rule));
            if doc.kind == PolicyKind::Kubernetes {
                out.extend(policy_types_findings(doc));
            }
            let Some(sel) = &rule.endpoint_selector else {
                continue;
            };
            let selected: Vec<&PodSpec> = input
                .pods
                .iter()
                .filter(|p| pod_selected(doc, sel, p))
                .collect();
            let public = !selected.is_empty() && selected.iter().all(|p| is_public(&p.labels));

            if input.know_pods && selected.is_empty() {
                out.push(Finding {
                    severity: Severity::Medium,
                    check: "selects-nothing".into(),
                    location: loc(doc, &format!("{base}.endpointSelector")),
                    problem: format!("policy {} selects no endpoint", doc.qualified_name()),
                    why: "a policy that selects nothing protects nothing; usually a label typo, or a namespaced policy in the wrong namespace".into(),
                    fix: "check the endpointSelector's labels against `lab get pods -o wide` (and the policy's namespace)".into(),
                });
            }

            for (j, r) in rule.ingress.iter().flatten().enumerate() {
                let path = format!("{base}.ingress[{j}]");
                wildcards(
                    doc,
                    &path,
                    "fromCIDR",
                    r.from_cidr.as_deref(),
                    r.from_cidr_set.as_deref(),
                    r.from_entities.as_deref(),
                    public,
                    &mut out,
                );
                if r.from_endpoints.as_ref().is_some_and(Vec::is_empty)
                    || r.from_cidr.as_ref().is_some_and(Vec::is_empty)
                    || r.from_entities.as_ref().is_some_and(Vec::is_empty)
                {
                    out.push(Finding {
                        severity: Severity::Low,
                        check: "empty-allow-list".into(),
                        location: loc(doc, &path),
                        problem: "an empty peer list allows nothing".into(),
                        why: "an empty list selects no peer: the rule only turns on default deny, which is rarely what an empty list was meant to say".into(),
                        fix: "list the peers to allow, or write `ingress: [{}]` to deny all on purpose".into(),
                    });
                }
            }
            for (j, r) in rule.egress.iter().flatten().enumerate() {
                let path = format!("{base}.egress[{j}]");
                let cidrs = r.to_cidr.as_deref();
                let sets = r.to_cidr_set.as_deref();
                if any_wildcard(cidrs, sets) {
                    out.push(Finding {
                        severity: Severity::Low,
                        check: "wildcard-egress".into(),
                        location: loc(doc, &format!("{path}.toCIDR")),
                        problem: "egress to 0.0.0.0/0 lets the pod send anywhere".into(),
                        why: "a compromised pod can exfiltrate data to any internet host".into(),
                        fix: "name the destinations (toCIDR with their ranges, toEndpoints, toFQDNs in a real cluster)".into(),
                    });
                }
            }
        }
    }

    for g in &input.groups {
        for (i, cidr) in g.spec.external_cidrs.iter().enumerate() {
            if cidr.contains(':') {
                let (line, _) = g
                    .locations
                    .line_of(&format!("spec.externalCIDRs[{i}]"))
                    .unwrap_or((g.source.line, 1));
                out.push(Finding {
                    location: format!(
                        "{}:{line} (CiliumCIDRGroup {}, spec.externalCIDRs[{i}])",
                        g.source.file, g.name
                    ),
                    ..ipv6_finding_text(cidr)
                });
            }
        }
    }

    // NodePorts: exposed to the outside, so their pods need an ingress policy, and the
    // prefilter must not bypass it.
    let docs = &input.policies;
    for svc in &input.services {
        if svc.service_type != ServiceType::NodePort {
            continue;
        }
        let backends: Vec<&PodSpec> = input.pods.iter().filter(|p| svc.selects(p)).collect();
        let guarded = |pod: &&PodSpec| {
            docs.iter().any(|d| {
                d.rules.iter().any(|r| {
                    let has_ingress = r.ingress.as_ref().is_some_and(|v| !v.is_empty())
                        || r.ingress_deny.as_ref().is_some_and(|v| !v.is_empty());
                    let dd = r.enable_default_deny.as_ref().and_then(|d| d.ingress) != Some(false);
                    has_ingress
                        && dd
                        && r.endpoint_selector
                            .as_ref()
                            .is_some_and(|s| pod_selected(d, s, pod))
                })
            })
        };
        let ports: Vec<u16> = svc.ports.iter().filter_map(|p| p.node_port).collect();
        let place = format!("service {}/{} ({})", svc.namespace, svc.name, svc.source);
        if input.know_pods && !backends.is_empty() && !backends.iter().all(guarded) {
            out.push(Finding {
                severity: Severity::High,
                check: "nodeport-without-ingress-policy".into(),
                location: place.clone(),
                problem: format!(
                    "NodePort {} reaches pods that no ingress policy selects",
                    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
                ),
                why: "a NodePort is open on the node's external address: without an ingress policy, anyone who can reach the node reaches these pods".into(),
                fix: format!(
                    "add a CiliumNetworkPolicy selecting the service's pods ({}) with ingress fromCIDR limited to the internal range (e.g. 10.0.0.0/8)",
                    svc.selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
                ),
            });
        }
        for p in ports
            .iter()
            .filter(|p| input.bypassed_node_ports.contains(p))
        {
            out.push(Finding {
                severity: Severity::Critical,
                check: "prefilter-bypass".into(),
                location: format!("prefilter on ext0, NodePort {p} ({place})"),
                problem: format!("the prefilter lets NodePort {p} skip every network policy"),
                why: "this is the 72-hour exposure: whatever the policies say, anyone on the internet reaches the service".into(),
                fix: format!("`lab prefilter bypass --node-port {p} --off`; keep fast paths from bypassing policy"),
            });
        }
    }

    // Shadowed rules and L7 rules cancelled by L4-only allows: resolved against the pods known.
    if input.know_pods && !input.policies.is_empty() {
        out.extend(resolution_findings(input));
    }
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.location.cmp(&b.location))
    });
    out
}

/// A NetworkPolicy whose `policyTypes` leaves out a direction it has rules for: Kubernetes
/// says those rules do not apply; Cilium (and so the lab) enforces them anyway.
fn policy_types_findings(doc: &PolicyDoc) -> Vec<Finding> {
    let Some(types) = doc
        .raw
        .pointer("/spec/policyTypes")
        .and_then(|t| t.as_array())
    else {
        return vec![];
    };
    let listed = |t: &str| types.iter().any(|x| x == t);
    [("ingress", "Ingress"), ("egress", "Egress")]
        .into_iter()
        .filter(|(field, t)| {
            !listed(t)
                && doc
                    .raw
                    .pointer(&format!("/spec/{field}"))
                    .and_then(|r| r.as_array())
                    .is_some_and(|r| !r.is_empty())
        })
        .map(|(field, t)| Finding {
            severity: Severity::Medium,
            check: "policy-types-mismatch".into(),
            location: loc(doc, &format!("spec.{field}")),
            problem: format!("`{field}` rules in a NetworkPolicy whose `policyTypes` does not list `{t}`"),
            why: format!("Kubernetes says these rules do not apply, and some network plugins ignore them; Cilium enforces them (and puts {field} in default deny), so the policy behaves differently from cluster to cluster"),
            fix: format!("add `{t}` to `policyTypes`, or remove the `{field}` rules"),
        })
        .collect()
}

/// An IPv6 prefix: valid Cilium, applied, and without effect in the lab's IPv4-only network.
fn ipv6_finding(doc: &PolicyDoc, path: &str, cidr: &str) -> Finding {
    Finding {
        location: loc(doc, path),
        ..ipv6_finding_text(cidr)
    }
}

/// A CIDR-set entry that names a CiliumCIDRGroup none of the groups known is (or selects by
/// labels none of them): it selects nothing until such a group is applied, as in Cilium.
fn missing_group(
    doc: &PolicyDoc,
    at: &str,
    set: &CidrRule,
    groups: &[CidrGroupDoc],
) -> Option<Finding> {
    let (field, what) = match (&set.cidr_group_ref, &set.cidr_group_selector) {
        (Some(name), _) => ("cidrGroupRef", format!("no CiliumCIDRGroup named `{name}`")),
        (None, Some(_)) => (
            "cidrGroupSelector",
            "no CiliumCIDRGroup with matching labels".to_owned(),
        ),
        (None, None) => return None,
    };
    if groups.iter().any(|g| g.selected_by(set)) {
        return None;
    }
    Some(Finding {
        severity: Severity::Medium,
        check: "selects-nothing".into(),
        location: loc(doc, &format!("{at}.{field}")),
        problem: format!(
            "this entry of policy {} selects nothing: {what} exists",
            doc.qualified_name()
        ),
        why: "a CIDR group is looked up when the policy is resolved: until it exists, the entry stands for no address (an allow allows nothing, a deny denies nothing)".into(),
        fix: "apply the CiliumCIDRGroup (lab policy apply -f), or correct the name or labels (lab policy get ccg)".into(),
    })
}

/// The text of an IPv6 finding, without its location.
fn ipv6_finding_text(cidr: &str) -> Finding {
    Finding {
        severity: Severity::Low,
        check: "ipv6-no-effect".into(),
        location: String::new(),
        problem: format!("{cidr} is an IPv6 prefix: it has no effect in this cluster, which is IPv4 only"),
        why: "pods here have IPv4 addresses only; on a dual-stack cluster the same rule also covers IPv6 traffic, so a policy tested here says nothing about it".into(),
        fix: "nothing, if the policy is meant for dual-stack clusters too; IPv4 traffic needs an IPv4 prefix (0.0.0.0/0 beside ::/0)".into(),
    }
}

/// ICMPv6 types (`family: IPv6`): valid Cilium, applied, and matching nothing in the lab's
/// IPv4-only network, like IPv6 prefixes.
fn icmpv6_findings(
    doc: &PolicyDoc,
    base: &str,
    rule: &enforcer::policy::api::Rule,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for (j, r) in rule.peer_rules() {
        for (k, icmp) in r.icmps.iter().flatten().enumerate() {
            for (m, field) in icmp.fields.iter().enumerate() {
                if field.family.as_deref() != Some("IPv6") {
                    continue;
                }
                let path = format!("{base}.{}[{j}].icmps[{k}].fields[{m}]", r.section());
                out.push(Finding {
                    severity: Severity::Low,
                    check: "ipv6-no-effect".into(),
                    location: loc(doc, &path),
                    problem: format!(
                        "ICMPv6 type {} has no effect in this cluster, which is IPv4 only",
                        field.icmp_type
                    ),
                    why: "pods here send and receive ICMP (IPv4) only; on a dual-stack cluster the same rule also covers ICMPv6, so a policy tested here says nothing about it".into(),
                    fix: "nothing, if the policy is meant for dual-stack clusters too; ICMP (IPv4) needs its own field (`family: IPv4` is the default)".into(),
                });
            }
        }
    }
    out
}

fn any_wildcard(
    cidrs: Option<&[String]>,
    sets: Option<&[enforcer::policy::api::CidrRule]>,
) -> bool {
    let wild = |c: &str| c.trim() == "::/0" || parse_cidr(c).is_some_and(|(_, l)| l == 0);
    cidrs.into_iter().flatten().any(|c| wild(c))
        || sets
            .into_iter()
            .flatten()
            .any(|s| wild(&s.cidr) && s.except.as_ref().is_none_or(Vec::is_empty))
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the fields of one finding"
)]
fn wildcards(
    doc: &PolicyDoc,
    path: &str,
    field: &str,
    cidrs: Option<&[String]>,
    sets: Option<&[enforcer::policy::api::CidrRule]>,
    entities: Option<&[Entity]>,
    public: bool,
    out: &mut Vec<Finding>,
) {
    if public {
        return;
    }
    if any_wildcard(cidrs, sets) {
        out.push(Finding {
            severity: Severity::High,
            check: "wildcard-cidr".into(),
            location: loc(doc, &format!("{path}.{field}")),
            problem: "ingress from 0.0.0.0/0 (any address) on endpoints not labelled public".into(),
            why: "a wildcard CIDR admits the whole internet wherever the pods are reachable from outside (a NodePort, a LoadBalancer): the mistake behind the 72-hour exposure".into(),
            fix: "allow only the internal range that needs access, e.g. fromCIDR: [10.0.0.0/8]; if the pods are meant to be public, label them exposure=public".into(),
        });
    }
    if let Some(e) = entities
        .into_iter()
        .flatten()
        .find(|e| matches!(e, Entity::World | Entity::All | Entity::WorldIpv4))
    {
        out.push(Finding {
            severity: Severity::High,
            check: "world-entity".into(),
            location: loc(doc, &format!("{path}.fromEntities")),
            problem: format!("ingress from entity `{}` on endpoints not labelled public", e.as_str()),
            why: "`world` (and `all`) include every address outside the cluster".into(),
            fix: "use fromCIDR with the internal range that needs access, or label the pods exposure=public if they really serve the internet".into(),
        });
    }
}

/// Checks that need the rules resolved: shadowed rules and cancelled L7 rules.
fn resolution_findings(input: &Input) -> Vec<Finding> {
    let mut out = Vec::new();
    let Ok(set) = normalize_with_groups(&input.policies, &input.groups) else {
        return out;
    };
    let mut ids = Identities::new();
    let mut eps = Vec::new();
    for (i, pod) in input.pods.iter().enumerate() {
        let ns_labels = input
            .namespaces
            .get(&pod.namespace)
            .cloned()
            .unwrap_or_default();
        let labels = pod_labels(
            &pod.namespace,
            &pod.labels,
            &ns_labels,
            &pod.service_account,
        );
        ids.acquire_pod(labels.clone());
        eps.push(EndpointRef {
            ep_id: i as u32 + 1,
            labels,
            named_ports: std::sync::Arc::new(pod.named_ports()),
        });
    }
    ids.set_cidrs(&set.cidrs);
    let idents: Vec<_> = ids.all().collect();
    let doc_of = |rule_ref: u32| {
        let info = &set.table[rule_ref as usize];
        let doc = input
            .policies
            .iter()
            .find(|d| d.name == info.policy && d.namespace == info.namespace);
        (info, doc)
    };

    // Each rule alone, and whether everything it allows is also allowed by another rule.
    let mut by_rule: BTreeMap<u32, std::collections::BTreeSet<MapKey>> = BTreeMap::new();
    for rule in set.rules.iter().filter(|r| !r.deny) {
        let single = resolve(std::slice::from_ref(rule), &eps, &idents, 0);
        by_rule
            .entry(rule.rule_ref)
            .or_default()
            .extend(single.map.keys().copied());
    }
    for (r, keys) in &by_rule {
        if keys.is_empty() {
            continue;
        }
        let covered_by = by_rule.iter().find(|(o, other)| {
            *o != r && other.len() > keys.len() && keys.iter().all(|k| covers(other, *k))
        });
        if let Some((o, _)) = covered_by {
            let (info, doc) = doc_of(*r);
            let (oinfo, _) = doc_of(*o);
            out.push(Finding {
                severity: Severity::Low,
                check: "shadowed-rule".into(),
                location: doc
                    .map(|d| {
                        loc(
                            d,
                            &format!(
                                "{}.{}[{}]",
                                spec_path(d, info.spec_index),
                                info.section,
                                info.rule_index
                            ),
                        )
                    })
                    .unwrap_or_else(|| info.source.clone()),
                problem: format!(
                    "this rule of {} allows nothing that {} ({}[{}]) does not already allow",
                    info.policy, oinfo.policy, oinfo.section, oinfo.rule_index
                ),
                why: "a shadowed rule suggests the broader one is broader than intended".into(),
                fix: "narrow the broader rule, or remove the redundant one".into(),
            });
        }
    }

    // L7 rules whose port also has an L4-only allow for some peers: those peers skip L7.
    let full = resolve(&set.rules, &eps, &idents, 0);
    for rule in set.rules.iter().filter(|r| r.http.is_some()) {
        let single = resolve(std::slice::from_ref(rule), &eps, &idents, 0);
        let cancelled = single.map.iter().any(|(k, v)| {
            v.verdict == Verdict::Redirect
                && full.map.get(k).is_some_and(|f| f.verdict == Verdict::Allow)
        });
        if cancelled {
            let (info, doc) = doc_of(rule.rule_ref);
            out.push(Finding {
                severity: Severity::High,
                check: "l7-cancelled".into(),
                location: doc.map(|d| loc(d, &format!("{}.{}[{}].toPorts", spec_path(d, info.spec_index), info.section, info.rule_index))).unwrap_or_else(|| info.source.clone()),
                problem: format!("the HTTP rules of {} do not apply to some peers: an L4-only allow on the same port lifts them", info.policy),
                why: "in Cilium an L4 allow without `rules` on the same port allows every request from those peers, exhaust port included".into(),
                fix: "add the same `rules.http` to the L4-only rule for that port, or remove the port from it".into(),
            });
        }
    }
    out
}

/// Whether the key set `set` covers `key` (the same key, or a less specific one).
fn covers(set: &std::collections::BTreeSet<MapKey>, key: MapKey) -> bool {
    key.covering().any(|k| set.contains(&k))
}

/// Renders findings for a terminal.
pub fn render(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "lab audit: no findings.\n".into();
    }
    let mut out = String::new();
    for f in findings {
        out.push_str(&f.render());
        out.push('\n');
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    out.push_str(&format!(
        "{} findings: {} critical, {} high, {} medium, {} low\n",
        findings.len(),
        count(Severity::Critical),
        count(Severity::High),
        count(Severity::Medium),
        count(Severity::Low)
    ));
    out
}

/// Policies and topology from files (policy files, manifests, or both in one file).
pub fn input_from_files(sources: &[enforcer::yaml::Source]) -> anyhow::Result<Input> {
    let mut policies = Vec::new();
    let mut groups = Vec::new();
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for src in sources {
        match crate::manifest::parse_all(src) {
            Ok(bundle) => {
                policies.extend(bundle.policies);
                groups.extend(bundle.groups);
                objects.extend(bundle.objects);
            }
            Err(e) => errors.extend(e.into_iter().map(|e| e.to_string())),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("the files do not parse:\n  {}", errors.join("\n  "));
    }
    let topo = crate::topology::from_objects(&objects)?;
    Ok(Input {
        policies,
        groups,
        know_pods: !topo.pods.is_empty(),
        pods: topo.pods,
        namespaces: topo.namespaces,
        services: topo.services,
        bypassed_node_ports: Vec::new(),
    })
}

/// The running lab's state, with the policies of `body.files` ({source, text}) applied on top
/// (as `lab policy apply` would), audited.
pub fn live(
    lab: &crate::control::Lab,
    req: &model::AuditRequest,
) -> Result<Vec<Finding>, web::api::ApiError> {
    use web::api::ApiError;
    let (mut docs, mut groups) = {
        let store = lab.policies.lock().expect("policies");
        (store.docs.clone(), store.groups.clone())
    };
    let mut extra_pods = Vec::new();
    let mut extra_services = Vec::new();
    // Every file at once, so that the errors of all of them are reported together.
    let sources: Vec<enforcer::yaml::Source> = req
        .files
        .iter()
        .map(|f| enforcer::yaml::Source::new(f.source.clone(), f.text.clone()))
        .collect();
    if !sources.is_empty() {
        let input = input_from_files(&sources).map_err(|e| ApiError::new(422, format!("{e:#}")))?;
        for d in input.policies {
            docs.insert((d.kind, d.namespace.clone(), d.name.clone()), d);
        }
        for g in input.groups {
            groups.insert(g.name.clone(), g);
        }
        extra_pods.extend(input.pods);
        extra_services.extend(input.services);
    }
    let mut pods: Vec<PodSpec> = lab
        .pods
        .read()
        .expect("pods")
        .values()
        .map(|p| p.spec.clone())
        .collect();
    pods.extend(extra_pods);
    let mut services: Vec<ServiceSpec> = lab
        .services
        .read()
        .expect("services")
        .values()
        .map(|s| s.spec.clone())
        .collect();
    services.extend(extra_services);
    let input = Input {
        policies: docs.into_values().collect(),
        groups: groups.into_values().collect(),
        pods,
        namespaces: lab.topology.namespaces.clone(),
        services,
        bypassed_node_ports: lab.engine.lock().expect("engine").datapath_ref().bypassed(),
        know_pods: true,
    };
    Ok(audit(&input))
}
