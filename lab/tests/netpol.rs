//! Kubernetes NetworkPolicy graded like the upstream conformance suite: on the x/y/z topology
//! (`lab/manifests/netpol-xyz.yaml`), each case of `data/netpol/cases.yaml` applies its policies,
//! probes every ordered pod pair on TCP and UDP 80 and 81 with real traffic (`lab matrix
//! --probe`), and compares the probed matrix with the expected one and with the lab's own
//! prediction. A failure prints the expected and the probed tables with the differing cells.

use std::path::PathBuf;

use serde::Deserialize;

use crate::harness::TestLab;

#[derive(Deserialize)]
struct Case {
    name: String,
    policies: String,
    default: Pass,
    expect: Vec<Expect>,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Pass {
    Pass,
    Drop,
}

#[derive(Deserialize)]
struct Expect {
    from: String,
    to: String,
    #[serde(default)]
    ports: Vec<String>,
    pass: bool,
}

/// `x/*`, `*/a`, `*` or `x/a` against `ns/pod`.
fn matches(pattern: &str, pod: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let (pns, ppod) = pattern.split_once('/').expect("pattern NS/POD");
    let (ns, name) = pod.split_once('/').expect("pod NS/POD");
    (pns == "*" || pns == ns) && (ppod == "*" || ppod == name)
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests/netpol-xyz.yaml")
}

fn cases() -> Vec<Case> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/netpol/cases.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The probed matrix (and whether the lab's prediction agreed with it).
fn probe(lab: &TestLab) -> serde_json::Value {
    let out = lab.lab(&[
        "matrix", "--probe", "-n", "x", "-n", "y", "-n", "z", "-o", "json",
    ]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "lab matrix: {e}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The cell at (from, to, port) of a matrix as `lab matrix -o json` gives it.
fn cells(m: &serde_json::Value) -> impl Iterator<Item = (String, String, String, bool, bool)> + '_ {
    let pods = m["pods"].as_array().unwrap();
    let ports = m["ports"].as_array().unwrap();
    m["cells"].as_array().unwrap().iter().map(move |c| {
        let at = |k: &str| c[k].as_u64().unwrap() as usize;
        let port = &ports[at("port")];
        (
            pods[at("from")].as_str().unwrap().to_owned(),
            pods[at("to")].as_str().unwrap().to_owned(),
            format!("{}/{}", port["protocol"].as_str().unwrap(), port["port"]),
            c["probed"].as_bool().expect("probed"),
            c["predicted"].as_bool().unwrap(),
        )
    })
}

fn expected(case: &Case, from: &str, to: &str, port: &str) -> bool {
    if from == to {
        return true;
    }
    let mut pass = case.default == Pass::Pass;
    for e in &case.expect {
        if matches(&e.from, from)
            && matches(&e.to, to)
            && (e.ports.is_empty() || e.ports.iter().any(|p| p == port))
        {
            pass = e.pass;
        }
    }
    pass
}

/// Expected and probed tables of the ports with a difference, cells that differ marked `*`.
fn report(case: &Case, m: &serde_json::Value) -> String {
    let pods: Vec<String> = m["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    let all: Vec<_> = cells(m).collect();
    let mut out = String::new();
    for port in all
        .iter()
        .map(|c| c.2.clone())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let row = |probed: bool| {
            let mut s = format!("{} {port}\n", if probed { "probed:" } else { "expected:" });
            s.push_str(&format!("{:>5}", ""));
            for p in &pods {
                s.push_str(&format!(" {p:>4}"));
            }
            s.push('\n');
            for from in &pods {
                s.push_str(&format!("{from:>5}"));
                for to in &pods {
                    let c = all
                        .iter()
                        .find(|c| &c.0 == from && &c.1 == to && c.2 == port)
                        .unwrap();
                    let want = expected(case, from, to, &port);
                    let got = if probed { c.3 } else { want };
                    let mark = if got { "." } else { "X" };
                    let diff = if c.3 != want { "*" } else { " " };
                    s.push_str(&format!(" {mark:>3}{diff}"));
                }
                s.push('\n');
            }
            s
        };
        if all
            .iter()
            .any(|c| c.2 == port && c.3 != expected(case, &c.0, &c.1, &port))
        {
            out.push_str(&row(false));
            out.push_str(&row(true));
        }
    }
    out
}

#[test]
fn upstream_cases_as_truth_tables() {
    let lab = TestLab::up_with(&[&manifest()]);
    // Before any policy: every pair talks on every port (this also waits for the servers).
    let baseline = testkit::wait_for(std::time::Duration::from_secs(20), || {
        let m = probe(&lab);
        let all_pass = cells(&m).all(|c| c.3);
        all_pass.then_some(m)
    });
    assert!(baseline.is_some(), "the x/y/z pods never all answered");

    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases() {
        lab.applied(&case.policies);
        let m = probe(&lab);
        checked += m["cells"].as_array().unwrap().len();
        let wrong: Vec<_> = cells(&m)
            .filter(|c| c.3 != expected(&case, &c.0, &c.1, &c.2))
            .collect();
        let mispredicted: Vec<_> = cells(&m).filter(|c| c.3 != c.4).collect();
        if !wrong.is_empty() {
            failures.push(format!(
                "case {}: {} cells differ from the expected matrix\n{}",
                case.name,
                wrong.len(),
                report(&case, &m)
            ));
        }
        if !mispredicted.is_empty() {
            failures.push(format!(
                "case {}: the lab's prediction disagrees with the probe on {:?}",
                case.name,
                mispredicted.iter().take(5).collect::<Vec<_>>()
            ));
        }
        lab.ok(&["policy", "delete", "--all"]);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("netpol truth tables: {checked} cells probed, all as expected");
}
