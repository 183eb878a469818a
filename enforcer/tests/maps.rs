//! Data-driven tests of policy semantics at the map boundary: pods and policy documents in, the
//! entries the kernel's maps get out — computed by the engine's own [`DesiredState`], without
//! root or BPF, in host byte order.
//!
//! Each case is a directory `tests/data/maps/CASE/` with:
//! - `input`: one item per line (`#` starts a comment):
//!   `pod NAMESPACE/NAME IP [KEY=VALUE ...]`, `namespace NAME [KEY=VALUE ...]` (namespace
//!   labels), `policy FILE` (CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy,
//!   CiliumCIDRGroup or ConnectionLimit documents; a FILE with a `/` is relative to the repository, a bare name to
//!   the case directory). Pods are registered in the order given, so identities and endpoint
//!   ids are too. The node has the lab's addresses (10.244.0.1, 203.0.113.10).
//! - `expected`: the result, one map entry a line, with pods, identities and rules named.
//!
//! `UPDATE_EXPECT=1 cargo test -p enforcer --test maps` rewrites the `expected` files after an
//! intended change; review the diff (it must be what Cilium would do) before committing it.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use enforcer::{
    engine::{DesiredState, EndpointSpec, MapState, RuleInfo},
    flow::describe_rule,
    identity::{Identities, IdentityKind},
    policy::{
        api::parse_policy_document,
        cidrgroup::{is_cidr_group, parse_cidr_group_document},
        limits::{is_limit, parse_limit_document},
        normalize::{normalize_limits, normalize_with_groups},
        resolve::{Direction, MapKey, MapValue, Verdict},
    },
    yaml::{Source, parse_documents},
};
use enforcer_common::{
    EP_EGRESS_ENFORCED, EP_EGRESS_WOULD_ENFORCE, EP_INGRESS_ENFORCED, EP_INGRESS_WOULD_ENFORCE,
};

/// The lab's node addresses and proxy port (`lab::cluster`, `lab::control`).
const NODE_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 244, 0, 1), Ipv4Addr::new(203, 0, 113, 10)];
const PROXY_PORT: u16 = 15001;

/// One `#[test]` per case, and the list every case directory must be on.
macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        const CASES: &[&str] = &[$(stringify!($name)),*];
        $(#[test] fn $name() { check(stringify!($name)); })*
    };
}

cases! {
    star_wars_l3_l4,
    egress_to_endpoints,
    entities,
    cidr_except,
    port_ranges,
    protocol_any,
    deny_beats_allow,
    l7_http,
    l4_allow_lifts_l7,
    empty_http,
    default_deny_only,
    audit_mode,
    clusterwide,
    namespace_scoping,
    connection_limits,
    ipv6_cidrs,
    cidr_groups,
    l7_port_range,
    icmp_types,
    protocols_without_ports,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/maps")
}

/// Renders `case` and compares it with its `expected` file (or rewrites it with
/// `UPDATE_EXPECT`).
fn check(case: &str) {
    let dir = data_dir().join(case);
    let actual = render(&load(&dir));
    let path = dir.join("expected");
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let (exp, act): (Vec<&str>, Vec<&str>) =
            (expected.lines().collect(), actual.lines().collect());
        let mut diff = String::new();
        for l in exp.iter().filter(|l| !act.contains(l)) {
            let _ = writeln!(diff, "- {l}");
        }
        for l in act.iter().filter(|l| !exp.contains(l)) {
            let _ = writeln!(diff, "+ {l}");
        }
        panic!(
            "{} differs (UPDATE_EXPECT=1 rewrites it):\n{diff}\n--- actual:\n{actual}",
            path.display()
        );
    }
}

#[test]
fn every_case_directory_is_checked() {
    let mut dirs: Vec<String> = fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.to_string()).collect();
    listed.sort();
    assert_eq!(dirs, listed, "every case needs its line in `cases!`");
}

/// A case's input, registered and resolved as the engine does it.
struct Case {
    state: DesiredState,
    maps: MapState,
}

fn labels(words: &[&str], line: &str) -> BTreeMap<String, String> {
    words
        .iter()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .unwrap_or_else(|| panic!("`{line}`: labels are KEY=VALUE"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn load(dir: &Path) -> Case {
    let input = fs::read_to_string(dir.join("input"))
        .unwrap_or_else(|e| panic!("{}/input: {e}", dir.display()));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut pods = Vec::new();
    let (mut policies, mut limits, mut groups) = (Vec::new(), Vec::new(), Vec::new());
    for line in input.lines() {
        let line = line.split('#').next().unwrap().trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["namespace", name, rest @ ..] => {
                namespaces.insert(name.to_string(), labels(rest, line));
            }
            ["pod", name, ip, rest @ ..] => {
                let (ns, pod) = name
                    .split_once('/')
                    .unwrap_or_else(|| panic!("`{line}`: pods are NAMESPACE/NAME"));
                let ip: Ipv4Addr = ip.parse().unwrap_or_else(|e| panic!("`{line}`: {e}"));
                pods.push((ns.to_owned(), pod.to_owned(), ip, labels(rest, line)));
            }
            ["policy", file] => {
                let path = if file.contains('/') {
                    repo.join(file)
                } else {
                    dir.join(file)
                };
                let text =
                    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let src = Source::new(*file, text);
                let docs = parse_documents(&src).unwrap_or_else(|e| panic!("{e}"));
                for doc in &docs {
                    let errors = if is_limit(doc) {
                        parse_limit_document(doc).map(|l| limits.push(l)).err()
                    } else if is_cidr_group(doc) {
                        parse_cidr_group_document(doc).map(|g| groups.push(g)).err()
                    } else {
                        parse_policy_document(doc).map(|p| policies.push(p)).err()
                    };
                    if let Some(errors) = errors {
                        panic!("{file}: {}", errors[0]);
                    }
                }
            }
            _ => panic!("{}/input: cannot read `{line}`", dir.display()),
        }
    }
    let mut rules =
        normalize_with_groups(&policies, &groups).unwrap_or_else(|e| panic!("{}", e[0]));
    normalize_limits(&limits, &mut rules);
    let mut state = DesiredState::new(&NODE_IPS, PROXY_PORT);
    for (namespace, pod, ip, labels) in pods {
        let spec = EndpointSpec {
            namespace_labels: namespaces.get(&namespace).cloned().unwrap_or_default(),
            namespace,
            pod,
            labels,
            service_account: "default".into(),
            ip,
            ifname: String::new(),
            named_ports: vec![],
        };
        state.add_endpoint(spec, 0);
    }
    state.set_rules(rules);
    let maps = state.compute();
    Case { state, maps }
}

/// An identity by its labels: `NAMESPACE:KEY=VALUE,...` for pods (the derived labels left out),
/// the name of a reserved one, the prefix of a CIDR one; and its number.
fn identity(ids: &Identities, id: u32) -> String {
    let Some(i) = ids.get(id) else {
        return format!("identity {id} (unknown)");
    };
    let name = match &i.kind {
        IdentityKind::Reserved => i
            .labels
            .keys()
            .map(|k| k.trim_start_matches("reserved:").to_owned())
            .collect::<Vec<_>>()
            .join(","),
        IdentityKind::Cidr { prefix, len } => format!("cidr:{prefix}/{len}"),
        IdentityKind::Pod => {
            let ns = i
                .labels
                .get("k8s:io.kubernetes.pod.namespace")
                .cloned()
                .unwrap_or_default();
            let own: Vec<String> = i
                .labels
                .iter()
                .filter_map(|(k, v)| {
                    let k = k.strip_prefix("k8s:")?;
                    let derived =
                        k.starts_with("io.kubernetes.") || k.starts_with("io.cilium.k8s.");
                    (!derived).then(|| format!("{k}={v}"))
                })
                .collect();
            format!("{ns}:{}", own.join(","))
        }
    };
    format!("identity {name} (id {id})")
}

/// A rule by policy, section and index, with its place in the file and its audit mode (as
/// flows name it).
fn rule(table: &[RuleInfo], rule_ref: u32) -> String {
    let Some(r) = table.get(rule_ref as usize).filter(|_| rule_ref != 0) else {
        return format!("rule {rule_ref} (none)");
    };
    let name = match &r.namespace {
        Some(ns) => format!("{ns}/{}", r.policy),
        None => r.policy.clone(),
    };
    let kind = match r.kind.as_str() {
        "CiliumNetworkPolicy" => "cnp",
        "CiliumClusterwideNetworkPolicy" => "ccnp",
        // A limit is one rule: its table entry's section restates the limit itself.
        "ConnectionLimit" => return format!("limit {name} at {}", r.source),
        other => other,
    };
    format!("{kind} {name} {}", describe_rule(r))
}

fn protocol(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        2 => "IGMP".into(),
        4 => "IPIP".into(),
        41 => "IPV6".into(),
        47 => "GRE".into(),
        50 => "ESP".into(),
        51 => "AH".into(),
        112 => "VRRP".into(),
        p => format!("protocol {p}"),
    }
}

/// The protocol and ports a key matches: `any protocol and port`, `TCP any port`, `TCP 80`,
/// `ICMP type 8`, or a block `TCP 30000-30007 (30000/13)`.
fn ports(k: &MapKey) -> String {
    match k.port_bits() {
        None => "any protocol and port".into(),
        Some(0) => format!("{} any port", protocol(k.protocol)),
        Some(16) if k.protocol == 1 => format!("ICMP type {}", k.port),
        Some(16) => format!("{} {}", protocol(k.protocol), k.port),
        Some(bits) => {
            let last = u32::from(k.port) + (1u32 << (16 - bits)) - 1;
            format!(
                "{} {}-{last} ({}/{bits})",
                protocol(k.protocol),
                k.port,
                k.port
            )
        }
    }
}

fn verdict(v: Verdict, rule_ref: u32, proxy_port: u16, table: &[RuleInfo]) -> String {
    match v {
        Verdict::None => "none (the endpoint's default)".into(),
        Verdict::Allow => format!("allow by {}", rule(table, rule_ref)),
        Verdict::Deny => format!("deny by {}", rule(table, rule_ref)),
        Verdict::Redirect => format!(
            "redirect to the proxy (port {proxy_port}) by {}",
            rule(table, rule_ref)
        ),
    }
}

fn value(v: &MapValue, table: &[RuleInfo]) -> String {
    let enforced = verdict(v.verdict, v.rule_ref, v.proxy_port, table);
    if (v.verdict, v.rule_ref) == (v.audit_verdict, v.audit_rule_ref) {
        enforced
    } else {
        let would = verdict(v.audit_verdict, v.audit_rule_ref, v.proxy_port, table);
        format!("{enforced}; would-be: {would}")
    }
}

fn direction(d: Direction) -> (&'static str, &'static str) {
    match d {
        Direction::Ingress => ("ingress", "from"),
        Direction::Egress => ("egress", "to"),
    }
}

/// Appends a section: its heading and its lines, or `(none)`.
fn section(out: &mut String, heading: &str, lines: Vec<String>) {
    let _ = writeln!(out, "# {heading}");
    if lines.is_empty() {
        out.push_str("(none)\n");
    }
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
}

/// The whole map state, one entry a line, in a stable order.
fn render(case: &Case) -> String {
    let (state, maps) = (&case.state, &case.maps);
    let ids = state.identities();
    let table = state.rule_table();
    let pod_of = |ep: u32| {
        state
            .endpoint(ep)
            .map(|e| format!("{}/{}", e.namespace, e.pod))
            .unwrap_or_else(|| format!("endpoint {ep}"))
    };
    let mut out = String::new();

    let pods = state
        .endpoints()
        .map(|e| {
            format!(
                "{} endpoint {} {} {}",
                pod_of(e.ep_id),
                e.ep_id,
                e.ip,
                identity(ids, e.identity)
            )
        })
        .collect();
    section(
        &mut out,
        "Pods: ENDPOINTS, and their IPCACHE /32 entries",
        pods,
    );

    let mut deny = Vec::new();
    for e in state.endpoints() {
        for (dir, enforced, would) in [
            (
                Direction::Ingress,
                EP_INGRESS_ENFORCED,
                EP_INGRESS_WOULD_ENFORCE,
            ),
            (
                Direction::Egress,
                EP_EGRESS_ENFORCED,
                EP_EGRESS_WOULD_ENFORCE,
            ),
        ] {
            let how = match (e.flags & enforced != 0, e.flags & would != 0) {
                (true, _) => "default deny",
                (false, true) => "default deny in the would-be verdict only",
                (false, false) => continue,
            };
            let by: Vec<String> = maps
                .policy
                .enforcers
                .get(&(e.ep_id, dir.code()))
                .into_iter()
                .flatten()
                .map(|r| rule(table, *r))
                .collect();
            deny.push(format!(
                "{} {}: {how}, by {}",
                pod_of(e.ep_id),
                direction(dir).0,
                by.join("; ")
            ));
        }
    }
    section(
        &mut out,
        "Default deny (endpoint flags), and the rules that switch it on",
        deny,
    );

    let cidrs = maps
        .cidrs
        .iter()
        .map(|((prefix, len), id)| format!("{prefix}/{len} {}", identity(ids, *id)))
        .collect();
    section(&mut out, "IPCACHE entries of CIDR identities", cidrs);

    let mut entries: Vec<(&MapKey, &MapValue)> = maps.policy.map.iter().collect();
    entries.sort_by_key(|(k, _)| {
        (
            k.endpoint,
            k.direction,
            k.identity,
            k.protocol,
            k.port,
            k.prefix_len,
        )
    });
    let mut policy = Vec::new();
    for (k, v) in entries {
        let (dir, peer) = direction(k.direction);
        policy.push(format!(
            "{} {dir} {peer} {} {} → {}",
            pod_of(k.endpoint),
            identity(ids, k.identity),
            ports(k),
            value(v, table)
        ));
        for h in maps.policy.http.get(k).into_iter().flatten() {
            let mut what = Vec::new();
            for (field, v) in [("method", &h.method), ("path", &h.path), ("host", &h.host)] {
                if let Some(v) = v {
                    what.push(format!("{field} {v}"));
                }
            }
            what.extend(h.headers.iter().map(|x| format!("header {x:?}")));
            policy.push(format!(
                "    http {} by {}",
                what.join(", "),
                rule(table, h.rule_ref)
            ));
        }
    }
    section(
        &mut out,
        "POLICY (the L7 rules of a redirect below its entry)",
        policy,
    );

    let mut limits: Vec<_> = maps.limits.iter().collect();
    limits.sort_by_key(|(k, _)| (k.ep_id, k.port, k.identity));
    let limits = limits
        .into_iter()
        .map(|(k, v)| {
            let bucket = if v.bucket == 0 {
                "one count for all limited peers (bucket 0)".to_owned()
            } else {
                format!("counted per identity (bucket {})", v.bucket)
            };
            format!(
                "{} TCP {} from {} → at most {}, {bucket}, by {}",
                pod_of(k.ep_id),
                k.port,
                identity(ids, k.identity),
                v.max,
                rule(table, v.limit_ref)
            )
        })
        .collect();
    section(&mut out, "CONN_LIMITS", limits);
    out
}
