//! Tests of `cilium connectivity test` run against the lab: the lab-adapted topology and
//! policies of the corpus (`enforcer/tests/data/cilium-corpus/lab-adapted/`), the scenarios
//! as cilium-cli sends them, and the outcome it expects (CONNECTIVITY-TESTS.md), each checked
//! with real traffic and with the flow that explains a drop.
//!
//! The tests CIDR groups and HTTP rules on port ranges make runnable:
//!
//! - `client-egress-to-cidrgroup-deny` and `-by-label` (allow-all-egress plus an `egressDeny`
//!   to a CiliumCIDRGroup, except one address): `PodToCIDR` to the excepted address is OK, to
//!   the other one PolicyDenyEgressDrop. The external targets are stood in by the lab's outside
//!   hosts: 1.0.0.0/8 by 10.20.0.0/16 and 198.51.100.0/24, ExternalIP 1.1.1.1 (excepted) by the
//!   attacker 198.51.100.66, ExternalOtherIP 1.0.0.1 by the monitoring host 10.20.0.5. They have
//!   no route back to the pods, so `curl https://IP` becomes a UDP datagram that must arrive.
//! - `echo-ingress-l7-port-range` (PodToPodWithEndpoints: GET `/`, `/public`, `/private` with
//!   and without the secret header, to echo pods on 8080 under rules on 4096-8191).
//! - `client-egress-l7-method-port-range`, with `client-egress-only-port-53.yaml` standing in
//!   for the DNS policy beside it (the lab has no DNS proxy; the scenarios use pod addresses).

use std::{path::PathBuf, time::Duration};

use serde_json::Value;

use crate::{
    cidr_groups::{ATTACKER, MONITOR, last_flow_to, udp_reaches},
    harness::TestLab,
};

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

/// A policy file of the lab-adapted corpus, as text.
fn policy_text(name: &str) -> String {
    std::fs::read_to_string(lab_adapted(&format!("connectivity-policies/{name}")))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The pod of a deployment in the test namespace.
fn pod_of(lab: &TestLab, deployment: &str) -> Value {
    lab.pods()
        .into_iter()
        .find(|p| p["namespace"] == NS && p["owner"] == deployment)
        .unwrap_or_else(|| panic!("no pod of {deployment}"))
}

fn name_of(lab: &TestLab, deployment: &str) -> String {
    pod_of(lab, deployment)["name"].as_str().unwrap().to_owned()
}

fn ip_of(lab: &TestLab, deployment: &str) -> String {
    pod_of(lab, deployment)["ip"].as_str().unwrap().to_owned()
}

/// The corpus's external targets, stood in by the lab's outside hosts (see the module doc).
fn with_stand_ins(yaml: &str) -> String {
    let mut out = String::new();
    for line in yaml.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        match line.trim() {
            r#"- "1.0.0.0/8""# => {
                out.push_str(&format!("{indent}- \"10.20.0.0/16\"\n"));
                out.push_str(&format!("{indent}- \"198.51.100.0/24\"\n"));
            }
            r#"- "1.1.1.1/32""# => out.push_str(&format!("{indent}- \"198.51.100.66/32\"\n")),
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(
        out.contains("198.51.100.66/32"),
        "no stand-in applied:\n{out}"
    );
    out
}

#[test]
fn client_egress_to_cidrgroup_deny_and_by_label() {
    let lab = topology();
    let clients: Vec<String> = ["client", "client2", "client3"]
        .iter()
        .map(|d| name_of(&lab, d))
        .collect();
    for file in [
        "client-egress-to-cidrgroup-external-deny.yaml",
        "client-egress-to-cidrgroup-external-deny-label.yaml",
        "client-egress-to-cidrgroup-external-deny-v2alpha1.yaml",
        "client-egress-to-cidrgroup-external-deny-label-v2alpha1.yaml",
    ] {
        lab.applied(&policy_text("allow-all-egress.yaml"));
        lab.applied(&with_stand_ins(&policy_text(file)));
        for client in &clients {
            // ExternalIP (excepted from the group): OK.
            assert!(
                udp_reaches(&lab, NS, client, ATTACKER),
                "{file}: {client} to the excepted address"
            );
            let f = last_flow_to(&lab, client, ATTACKER);
            assert_eq!(f["verdict"], "FORWARDED", "{file}: {f}");
            // ExternalOtherIP (in the group): PolicyDenyEgressDrop.
            assert!(
                !udp_reaches(&lab, NS, client, MONITOR),
                "{file}: {client} to the denied address"
            );
            let f = last_flow_to(&lab, client, MONITOR);
            assert_eq!(
                (
                    f["verdict"].as_str(),
                    f["drop_reason_desc"].as_str(),
                    f["traffic_direction"].as_str()
                ),
                (Some("DROPPED"), Some("POLICY_DENY"), Some("EGRESS")),
                "{file}: {f}"
            );
            assert!(
                f["policy_explanation"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("client-egress-to-cidrgroup-deny"),
                "{file}: {f}"
            );
        }
        lab.ok(&["policy", "delete", "--all"]);
    }
}

/// `curl` from a pod of `deployment`: the HTTP status, or `None` when it gets no answer.
fn http_status(
    lab: &TestLab,
    deployment: &str,
    method: &str,
    url: &str,
    header: Option<&str>,
) -> Option<u16> {
    let from = format!("{NS}/{deployment}");
    let mut args = vec![
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-m",
        "2",
        "-X",
        method,
    ];
    if let Some(h) = header {
        args.extend(["-H", h]);
    }
    args.push(url);
    let (code, out) = lab.exec(&from, &args);
    (code == 0).then(|| out.trim().parse().ok()).flatten()
}

/// The latest drop of traffic from `pod` by the kernel (not the proxy).
fn last_kernel_drop(lab: &TestLab, pod: &str) -> Value {
    testkit::wait_for(Duration::from_secs(5), || {
        lab.flows(&["--pod", pod, "--verdict", "DROPPED"])
            .into_iter()
            .rev()
            .find(|f| f["source"]["pod_name"] == pod && f["Type"] == "L3_L4")
    })
    .unwrap_or_else(|| panic!("no drop from {pod}"))
}

#[test]
fn echo_ingress_l7_port_range() {
    let lab = topology();
    lab.applied(&policy_text("echo-ingress-l7-http-port-range.yaml"));
    for echo in ["echo-same-node", "echo-other-node"] {
        let base = format!("http://{}:8080", ip_of(&lab, echo));
        let get = |client: &str, path: &str, header: Option<&str>| {
            http_status(&lab, client, "GET", &format!("{base}{path}"), header)
        };
        // client2 (other=client): every request OK but /private without the header, which
        // the proxy answers with 403 (DropCurlHTTPError).
        assert_eq!(get("client2", "/", None), Some(200), "{echo}");
        assert_eq!(get("client2", "/public", None), Some(200), "{echo}");
        assert_eq!(get("client2", "/private", None), Some(403), "{echo}");
        assert_eq!(
            get("client2", "/private", Some("X-Very-Secret-Token: 42")),
            Some(200),
            "{echo}"
        );
        // client and client3: Drop / DefaultDenyIngressDrop.
        for client in ["client", "client3"] {
            assert_eq!(get(client, "/public", None), None, "{client} to {echo}");
            let f = last_kernel_drop(&lab, &name_of(&lab, client));
            assert_eq!(
                (
                    f["drop_reason_desc"].as_str(),
                    f["traffic_direction"].as_str()
                ),
                (Some("POLICY_DENIED"), Some("INGRESS")),
                "{f}"
            );
        }
    }
    let denied = testkit::wait_for(Duration::from_secs(5), || {
        lab.flows(&["--type", "L7", "--verdict", "DROPPED"])
            .into_iter()
            .find(|f| {
                f["l7"]["http"]["url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("/private"))
            })
    })
    .expect("an L7 drop of /private");
    assert_eq!(denied["l7"]["http"]["code"], 403);
    assert!(
        denied["policy_explanation"]
            .as_str()
            .unwrap_or_default()
            .contains("echo-ingress-l7-http-port-range"),
        "{denied}"
    );
}

#[test]
fn client_egress_l7_method_port_range() {
    let lab = topology();
    lab.applied(&policy_text("client-egress-only-port-53.yaml"));
    lab.applied(&policy_text("client-egress-l7-http-method-port-range.yaml"));
    let same = format!("http://{}:8080", ip_of(&lab, "echo-same-node"));
    let other = format!("http://{}:8080", ip_of(&lab, "echo-other-node"));
    // client2 POST to other=echo (echo-same-node): OK.
    for path in ["/public", "/private"] {
        assert_eq!(
            http_status(&lab, "client2", "POST", &format!("{same}{path}"), None),
            Some(200),
            "POST {path}"
        );
    }
    // client2 GET to first=echo (echo-other-node): DropCurlHTTPError.
    assert_eq!(
        http_status(&lab, "client2", "GET", &format!("{other}/public"), None),
        Some(403)
    );
    // client and client3: DefaultDenyEgressDrop.
    for client in ["client", "client3"] {
        assert_eq!(
            http_status(&lab, client, "POST", &format!("{same}/public"), None),
            None,
            "{client}"
        );
        let f = last_kernel_drop(&lab, &name_of(&lab, client));
        assert_eq!(
            (
                f["drop_reason_desc"].as_str(),
                f["traffic_direction"].as_str()
            ),
            (Some("POLICY_DENIED"), Some("EGRESS")),
            "{f}"
        );
    }
}
