//! Tests of `cilium connectivity test` run against the lab: the lab-adapted topology and
//! policies of the corpus (`enforcer/tests/data/cilium-corpus/lab-adapted/`), the scenarios
//! as cilium-cli sends them, and the outcome it expects (CONNECTIVITY-TESTS.md), each checked
//! with real traffic and with the flow that explains a drop.

use std::{path::PathBuf, time::Duration};

use serde_json::Value;

use crate::harness::TestLab;

const NS: &str = "cilium-test-1";

fn lab_adapted(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../enforcer/tests/data/cilium-corpus/lab-adapted")
        .join(rel)
}

fn topology() -> TestLab {
    TestLab::up_with(&[&lab_adapted("connectivity-topology.yaml")])
}

/// Applies the test's policies, as cilium-cli does before its scenarios.
fn with_policies(lab: &TestLab, files: &[&str]) {
    let mut args = vec!["policy".to_owned(), "apply".to_owned()];
    for f in files {
        args.push("-f".into());
        args.push(
            lab_adapted(&format!("connectivity-policies/{f}"))
                .display()
                .to_string(),
        );
    }
    lab.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A pod of the test namespace, as cilium-cli's actions see it.
struct Pod {
    /// `cilium-test-1/NAME`, for `lab exec`.
    exec: String,
    name: String,
    ip: String,
    labels: Value,
}

impl Pod {
    fn has_label(&self, key: &str, value: &str) -> bool {
        self.labels[key] == value
    }
}

fn pods(lab: &TestLab, kind: &str) -> Vec<Pod> {
    let mut out: Vec<Pod> = lab
        .pods()
        .into_iter()
        .filter(|p| p["namespace"] == NS && p["labels"]["kind"] == kind)
        .map(|p| Pod {
            exec: format!("{NS}/{}", p["name"].as_str().unwrap()),
            name: p["name"].as_str().unwrap().to_owned(),
            ip: p["ip"].as_str().unwrap().to_owned(),
            labels: p["labels"].clone(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!out.is_empty(), "no pods of kind {kind}");
    out
}

/// cilium-cli's result kinds, as far as these tests use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The command succeeds.
    Ok,
    /// The command fails; the destination's ingress drops it with an explicit deny rule.
    PolicyDenyIngressDrop,
    /// The command fails; the destination's ingress drops it by default deny.
    DefaultDenyIngressDrop,
}

/// `ClientToClient`: one ICMP echo from `src` to `dst`, then the outcome and the flow that
/// explains a drop are checked against `expect`.
fn ping(lab: &TestLab, src: &Pod, dst: &Pod, expect: Expect) {
    let (code, out) = lab.exec(&src.exec, &["ping", "-c1", "-W1", &dst.ip]);
    let what = format!("ping {} -> {}", src.name, dst.name);
    assert_eq!(code == 0, expect == Expect::Ok, "{what}: {expect:?}: {out}");
    let reason = match expect {
        Expect::Ok => return,
        Expect::PolicyDenyIngressDrop => "POLICY_DENY",
        Expect::DefaultDenyIngressDrop => "POLICY_DENIED",
    };
    let flow = testkit::wait_for(Duration::from_secs(5), || {
        lab.flows(&[]).into_iter().rev().find(|f| {
            f["verdict"] == "DROPPED"
                && f["source"]["pod_name"] == src.name.as_str()
                && f["destination"]["pod_name"] == dst.name.as_str()
                && f["l4"]["ICMPv4"]["type"] == 8
        })
    })
    .unwrap_or_else(|| panic!("{what}: no drop flow"));
    assert_eq!(flow["traffic_direction"], "INGRESS", "{what}: {flow}");
    assert_eq!(flow["drop_reason_desc"], reason, "{what}: {flow}");
}

/// `PodToPod`: `curl http://<echo ip>:8080/` from `src`.
fn curl(lab: &TestLab, src: &Pod, dst: &Pod) -> bool {
    let url = format!("http://{}:8080/", dst.ip);
    lab.exec(
        &src.exec,
        &["curl", "-s", "-o", "/dev/null", "-m", "2", &url],
    )
    .0 == 0
}

/// `client-ingress-icmp`: clients accept ICMP echo requests from `other=client` (client2) only.
/// Expected: from client2 OK/OK; from the others OK / DefaultDenyIngressDrop.
#[test]
fn client_ingress_icmp() {
    let lab = topology();
    let clients = pods(&lab, "client");
    assert_eq!(clients.len(), 3, "client, client2, client3");
    with_policies(&lab, &["echo-ingress-icmp.yaml"]);
    for src in &clients {
        for dst in clients.iter().filter(|d| d.name != src.name) {
            let expect = if src.has_label("other", "client") {
                Expect::Ok
            } else {
                Expect::DefaultDenyIngressDrop
            };
            ping(&lab, src, dst, expect);
        }
    }
}

/// `client-ingress-from-other-client-icmp-deny`: everything is allowed, but clients deny ICMP
/// echo requests from `other=client` (client2). Expected: client2 → a client Drop /
/// PolicyDenyIngressDrop; every other ping and every client → echo request OK.
#[test]
fn client_ingress_from_other_client_icmp_deny() {
    let lab = topology();
    with_policies(
        &lab,
        &[
            "allow-all-egress.yaml",
            "allow-all-ingress.yaml",
            "echo-ingress-icmp-deny.yaml",
        ],
    );
    let (clients, echoes) = (pods(&lab, "client"), pods(&lab, "echo"));
    for src in &clients {
        for dst in &echoes {
            assert!(curl(&lab, src, dst), "curl {} -> {}", src.name, dst.name);
        }
        for dst in clients.iter().filter(|d| d.name != src.name) {
            let expect = if src.has_label("other", "client") && dst.has_label("kind", "client") {
                Expect::PolicyDenyIngressDrop
            } else {
                Expect::Ok
            };
            ping(&lab, src, dst, expect);
        }
    }
}
