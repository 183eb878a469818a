//! Proof that the lab's prediction and its datapath agree: random policy sets (Cilium and
//! Kubernetes kinds; label selectors with and without namespaces, entities, CIDRs, ports, port
//! ranges, protocols, deny rules, default-deny switches) over the x/y/z topology, each probed
//! with real traffic by `lab matrix --probe` and compared with the predicted matrix cell by
//! cell. A disagreement is a bug of the lab; the failure prints the policy set and the cells.
//!
//! The suite runs a short form; `LAB_AGREEMENT_SETS=200 cargo test -p lab --test tests
//! agreement -- --nocapture` is the long one (`LAB_AGREEMENT_SEED` picks another sequence).

use std::path::PathBuf;

use crate::harness::TestLab;

/// Sets in the suite's short form.
const SHORT_FORM: usize = 6;

/// xorshift64*: small, deterministic, enough to spread choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const NAMESPACES: [&str; 3] = ["x", "\"y\"", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

/// A Cilium endpoint selector, as flow-style YAML.
fn cilium_selector(r: &mut Rng) -> String {
    match r.below(5) {
        0 => "{}".into(),
        1 => format!("{{matchLabels: {{pod: {}}}}}", r.pick(&PODS)),
        2 => format!(
            "{{matchLabels: {{k8s:io.kubernetes.pod.namespace: {}, pod: {}}}}}",
            r.pick(&NAMESPACES),
            r.pick(&PODS)
        ),
        3 => format!(
            "{{matchExpressions: [{{key: pod, operator: {}, values: [{}, {}]}}]}}",
            r.pick(&["In", "NotIn"]),
            r.pick(&PODS),
            r.pick(&PODS)
        ),
        _ => format!(
            "{{matchLabels: {{k8s:io.cilium.k8s.namespace.labels.ns: {}}}}}",
            r.pick(&NAMESPACES)
        ),
    }
}

fn cilium_ports(r: &mut Rng) -> String {
    let port = match r.below(4) {
        0 => format!("{{port: \"{}\"}}", r.pick(&["80", "81"])),
        1 => format!(
            "{{port: \"{}\", protocol: {}}}",
            r.pick(&["80", "81"]),
            r.pick(&["TCP", "UDP", "ANY"])
        ),
        2 => format!(
            "{{port: \"80\", endPort: 81, protocol: {}}}",
            r.pick(&["TCP", "UDP"])
        ),
        _ => format!("{{port: \"0\", protocol: {}}}", r.pick(&["TCP", "UDP"])),
    };
    format!("toPorts: [{{ports: [{port}]}}]")
}

/// One rule of a Cilium section (`from`/`to` fields by direction).
fn cilium_rule(r: &mut Rng, ingress: bool) -> String {
    let (eps, ents, cidr) = if ingress {
        ("fromEndpoints", "fromEntities", "fromCIDR")
    } else {
        ("toEndpoints", "toEntities", "toCIDR")
    };
    let mut fields = Vec::new();
    match r.below(4) {
        0 | 1 => fields.push(format!("{eps}: [{}]", cilium_selector(r))),
        2 => fields.push(format!(
            "{ents}: [{}]",
            r.pick(&["cluster", "all", "world", "host"])
        )),
        _ => fields.push(format!(
            "{cidr}: [{}]",
            r.pick(&["198.51.100.0/24", "10.0.0.0/8", "0.0.0.0/0"])
        )),
    }
    if r.chance(60) {
        fields.push(cilium_ports(r));
    }
    format!("{{{}}}", fields.join(", "))
}

fn cilium_policy(r: &mut Rng, name: &str) -> String {
    let namespace = r.pick(&NAMESPACES);
    let mut spec = vec![format!("endpointSelector: {}", cilium_selector(r))];
    let sections = [
        ("ingress", true),
        ("ingressDeny", true),
        ("egress", false),
        ("egressDeny", false),
    ];
    let mut any = false;
    for (i, (section, ingress)) in sections.iter().enumerate() {
        let last_chance = i == sections.len() - 1 && !any;
        if last_chance || r.chance(if section.ends_with("Deny") { 25 } else { 50 }) {
            let rules: Vec<String> = (0..1 + r.below(2))
                .map(|_| cilium_rule(r, *ingress))
                .collect();
            spec.push(format!("{section}: [{}]", rules.join(", ")));
            any = true;
        }
    }
    if r.chance(15) {
        spec.push(format!(
            "enableDefaultDeny: {{ingress: {}, egress: {}}}",
            r.chance(50),
            r.chance(50)
        ));
    }
    let spec: String = spec.iter().map(|s| format!("  {s}\n")).collect();
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    )
}

fn k8s_peer(r: &mut Rng) -> String {
    match r.below(5) {
        0 => format!(
            "{{podSelector: {{matchLabels: {{pod: {}}}}}}}",
            r.pick(&PODS)
        ),
        1 => format!(
            "{{namespaceSelector: {{matchLabels: {{ns: {}}}}}}}",
            r.pick(&NAMESPACES)
        ),
        2 => format!(
            "{{namespaceSelector: {{}}, podSelector: {{matchExpressions: [{{key: pod, operator: NotIn, values: [{}]}}]}}}}",
            r.pick(&PODS)
        ),
        3 => "{podSelector: {}}".into(),
        _ => format!(
            "{{ipBlock: {{cidr: {}}}}}",
            r.pick(&["10.0.0.0/8", "198.51.100.0/24"])
        ),
    }
}

fn k8s_rule(r: &mut Rng, ingress: bool) -> String {
    let mut fields = Vec::new();
    if r.chance(80) {
        let peers: Vec<String> = (0..1 + r.below(2)).map(|_| k8s_peer(r)).collect();
        fields.push(format!(
            "{}: [{}]",
            if ingress { "from" } else { "to" },
            peers.join(", ")
        ));
    }
    if r.chance(60) {
        let port = match r.below(4) {
            0 => format!("{{port: {}}}", r.pick(&["80", "81"])),
            1 => format!(
                "{{protocol: {}, port: {}}}",
                r.pick(&["TCP", "UDP"]),
                r.pick(&["80", "81"])
            ),
            2 => format!(
                "{{port: {}}}",
                r.pick(&["serve-80-tcp", "serve-81-tcp", "serve-80-udp"])
            ),
            _ => format!(
                "{{protocol: {}, port: 80, endPort: 81}}",
                r.pick(&["TCP", "UDP"])
            ),
        };
        let port = if port.contains("serve-80-udp") {
            "{protocol: UDP, port: serve-80-udp}".to_owned()
        } else {
            port
        };
        fields.push(format!("ports: [{port}]"));
    }
    format!("{{{}}}", fields.join(", "))
}

fn k8s_policy(r: &mut Rng, name: &str) -> String {
    let namespace = r.pick(&NAMESPACES);
    let selector = match r.below(3) {
        0 => "{}".to_owned(),
        _ => format!("{{matchLabels: {{pod: {}}}}}", r.pick(&PODS)),
    };
    let mut spec = vec![format!("podSelector: {selector}")];
    let types = r.pick(&["", "[Ingress]", "[Egress]", "[Ingress, Egress]"]);
    if !types.is_empty() {
        spec.push(format!("policyTypes: {types}"));
    }
    for (section, ingress) in [("ingress", true), ("egress", false)] {
        if r.chance(60) {
            let rules: Vec<String> = (0..r.below(3)).map(|_| k8s_rule(r, ingress)).collect();
            spec.push(format!("{section}: [{}]", rules.join(", ")));
        }
    }
    let spec: String = spec.iter().map(|s| format!("  {s}\n")).collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    )
}

fn policy_set(r: &mut Rng) -> String {
    (0..1 + r.below(3))
        .map(|i| {
            if r.chance(50) {
                cilium_policy(r, &format!("cnp-{i}"))
            } else {
                k8s_policy(r, &format!("knp-{i}"))
            }
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn prediction_and_datapath_agree_on_random_policy_sets() {
    let sets: usize = std::env::var("LAB_AGREEMENT_SETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SHORT_FORM);
    let seed: u64 = std::env::var("LAB_AGREEMENT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1ab5);
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests/netpol-xyz.yaml");
    let lab = TestLab::up_with(&[&manifest]);
    let matrix = || {
        let out = lab.lab(&[
            "matrix", "--probe", "-n", "x", "-n", "y", "-n", "z", "-o", "json",
        ]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("lab matrix: {e}\n{}", String::from_utf8_lossy(&out.stderr)))
    };
    // Every server answers before the first set.
    let ready = testkit::wait_for(std::time::Duration::from_secs(20), || {
        let m = matrix();
        let all = m["cells"].as_array()?.iter().all(|c| c["probed"] == true);
        all.then_some(())
    });
    assert!(ready.is_some(), "the x/y/z pods never all answered");

    let mut rng = Rng(seed);
    let (mut cells, mut dropped) = (0, 0);
    let mut failures = Vec::new();
    for n in 0..sets {
        let set = policy_set(&mut rng);
        let out = lab.apply(&set);
        assert!(
            out.status.success(),
            "set {n} was refused (a generator or lab bug):\n{set}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = matrix();
        let all = m["cells"].as_array().unwrap();
        cells += all.len();
        dropped += all.iter().filter(|c| c["probed"] == false).count();
        let pods = m["pods"].as_array().unwrap();
        let ports = m["ports"].as_array().unwrap();
        let wrong: Vec<String> = all
            .iter()
            .filter(|c| c["probed"] != c["predicted"])
            .map(|c| {
                let at = |k: &str| c[k].as_u64().unwrap() as usize;
                format!(
                    "{} -> {} {}/{}: predicted {}, probed {} (egress: {}; ingress: {})",
                    pods[at("from")],
                    pods[at("to")],
                    ports[at("port")]["protocol"],
                    ports[at("port")]["port"],
                    c["predicted"],
                    c["probed"],
                    c["egress"],
                    c["ingress"]
                )
            })
            .collect();
        if !wrong.is_empty() {
            failures.push(format!(
                "set {n}:\n{set}\n{} disagreements:\n  {}",
                wrong.len(),
                wrong.join("\n  ")
            ));
        }
        lab.ok(&["policy", "delete", "--all"]);
    }
    eprintln!(
        "agreement: {sets} random policy sets, {cells} cells probed ({dropped} dropped), {} sets with disagreements",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
