//! CiliumCIDRGroups with real traffic from pods to the hosts outside the cluster (the attacker
//! 198.51.100.66 and the monitoring host 10.20.0.5): `toCIDRSet` entries naming a group by
//! name and by labels, in allow and deny rules, the policy taking effect when the group is
//! applied after it, and the group's life cycle (`lab policy get/delete ccg`, a restart).
//!
//! The outside hosts have no route back to the pod network (the lab does not masquerade pod
//! egress), so traffic is a UDP datagram: it either reaches a socket the test binds on the
//! outside host, or the enforcer drops it and records why.

use std::{
    net::{Ipv4Addr, UdpSocket},
    path::PathBuf,
    time::Duration,
};

use serde_json::Value;

use crate::harness::{TestLab, data};

pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 66);
pub const MONITOR: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 5);

/// The outside host with address `ip`, as the lab names its namespace.
fn host_netns(lab: &TestLab, ip: Ipv4Addr) -> PathBuf {
    let host = if ip == ATTACKER {
        "attacker"
    } else {
        "monitor"
    };
    PathBuf::from("/run/netns").join(format!("{}-{host}", lab.instance))
}

/// Whether a datagram from pod `ns/pod` reaches the outside host at `to` (port 9000).
pub fn udp_reaches(lab: &TestLab, ns: &str, pod: &str, to: Ipv4Addr) -> bool {
    let listener = testkit::in_netns(&host_netns(lab, to), || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 9000))
    })
    .unwrap()
    .unwrap();
    listener
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let pod_ns = PathBuf::from("/run/netns").join(format!("{}-{ns}-{pod}", lab.instance));
    testkit::in_netns(&pod_ns, move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.send_to(b"hello outside", (to, 9000)).unwrap();
    })
    .unwrap();
    let mut buf = [0u8; 32];
    listener
        .recv_from(&mut buf)
        .is_ok_and(|(n, _)| &buf[..n] == b"hello outside")
}

/// The latest flow from `pod` to `to`.
pub fn last_flow_to(lab: &TestLab, pod: &str, to: Ipv4Addr) -> Value {
    testkit::wait_for(Duration::from_secs(5), || {
        lab.flows(&["--pod", pod])
            .into_iter()
            .rev()
            .find(|f| f["IP"]["destination"] == to.to_string())
    })
    .unwrap_or_else(|| panic!("no flow from {pod} to {to}"))
}

fn playground() -> TestLab {
    TestLab::up_with(&[&data("manifests/playground.yaml")])
}

const GROUPS: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumCIDRGroup
metadata:
  name: internet
spec:
  externalCIDRs:
  - 198.51.100.0/24
  - 2001:db8::/32
---
apiVersion: cilium.io/v2alpha1
kind: CiliumCIDRGroup
metadata:
  name: monitoring
  labels:
    role: monitoring
spec:
  externalCIDRs:
  - 10.20.0.0/16
"#;

/// client-a may send to the group `internet` (by name); client-b may send anywhere except to
/// the groups labelled `role: monitoring` (by label).
const POLICIES: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: red-to-internet
spec:
  endpointSelector:
    matchLabels: {team: red, role: client}
  egress:
  - toCIDRSet:
    - cidrGroupRef: internet
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: blue-not-to-monitoring
spec:
  endpointSelector:
    matchLabels: {team: blue}
  egress:
  - toEntities: [world]
  egressDeny:
  - toCIDRSet:
    - cidrGroupSelector:
        matchLabels: {role: monitoring}
"#;

#[test]
fn groups_by_name_and_by_label_allow_and_deny_egress_once_applied() {
    let lab = playground();
    assert!(udp_reaches(&lab, "default", "client-a", ATTACKER));
    assert!(udp_reaches(&lab, "default", "client-b", MONITOR));

    // The policies first: the groups do not exist yet, so their entries select nothing.
    lab.applied(POLICIES);
    assert!(
        !udp_reaches(&lab, "default", "client-a", ATTACKER),
        "red's only allow names a group that does not exist yet"
    );
    let f = last_flow_to(&lab, "client-a", ATTACKER);
    assert_eq!(
        (f["verdict"].as_str(), f["drop_reason_desc"].as_str()),
        (Some("DROPPED"), Some("POLICY_DENIED")),
        "{f}"
    );
    assert!(
        udp_reaches(&lab, "default", "client-b", MONITOR),
        "blue's deny selects nothing yet"
    );
    let audit = lab.ok(&["audit", "--fail-on", "critical"]);
    assert!(
        audit.contains("[selects-nothing]")
            && audit.contains("no CiliumCIDRGroup named `internet`")
            && audit.contains("no CiliumCIDRGroup with matching labels"),
        "{audit}"
    );

    // A bad group is refused with the file, line, field and fix, and changes nothing.
    let out = lab.apply(
        "apiVersion: cilium.io/v2\nkind: CiliumCIDRGroup\nmetadata:\n  name: internet\nspec:\n  externalCIDRs:\n  - 198.51.100.66\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(":7:")
            && err.contains("spec.externalCIDRs[0]")
            && err.contains("198.51.100.66/32"),
        "{err}"
    );
    assert!(!udp_reaches(&lab, "default", "client-a", ATTACKER));

    // The groups: the policy set is resolved again.
    let out = lab.apply(GROUPS);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ciliumcidrgroup.cilium.io/internet created"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(udp_reaches(&lab, "default", "client-a", ATTACKER));
    let f = last_flow_to(&lab, "client-a", ATTACKER);
    assert_eq!(f["verdict"], "FORWARDED", "{f}");
    assert!(
        f["policy_explanation"]
            .as_str()
            .unwrap_or_default()
            .contains("red-to-internet"),
        "the flow names the rule: {f}"
    );
    assert!(
        !udp_reaches(&lab, "default", "client-a", MONITOR),
        "the group covers 198.51.100.0/24 only"
    );
    assert!(!udp_reaches(&lab, "default", "client-b", MONITOR));
    let f = last_flow_to(&lab, "client-b", MONITOR);
    assert_eq!(
        (f["verdict"].as_str(), f["drop_reason_desc"].as_str()),
        (Some("DROPPED"), Some("POLICY_DENY")),
        "an explicit deny: {f}"
    );
    assert!(
        f["policy_explanation"]
            .as_str()
            .unwrap_or_default()
            .contains("blue-not-to-monitoring"),
        "{f}"
    );
    assert!(udp_reaches(&lab, "default", "client-b", ATTACKER));
    assert!(
        !lab.ok(&["audit", "--fail-on", "critical"])
            .contains("no CiliumCIDRGroup")
    );

    // A changed group changes the verdicts: `internet` now also covers the monitoring host.
    lab.applied(&GROUPS.replace("  - 2001:db8::/32", "  - 10.20.0.0/16"));
    assert!(udp_reaches(&lab, "default", "client-a", MONITOR));

    // kubectl's short name; deleting a group leaves its entries selecting nothing again.
    let listed = lab.ok(&["policy", "get", "ccg"]);
    assert!(
        listed.contains("internet") && listed.contains("monitoring") && !listed.contains("red-to"),
        "{listed}"
    );
    let yaml = lab.ok(&["policy", "get", "ccg/internet", "-o", "yaml"]);
    assert!(yaml.contains("externalCIDRs"), "{yaml}");
    let out = lab.ok(&["policy", "delete", "ccg", "monitoring"]);
    assert!(out.contains("ccg/monitoring deleted"), "{out}");
    assert!(udp_reaches(&lab, "default", "client-b", MONITOR));
    assert!(
        lab.ok(&["policy", "get", "cnp"])
            .contains("blue-not-to-monitoring")
    );
}

#[test]
fn groups_are_saved_and_restored_with_the_policies() {
    let lab = playground();
    lab.applied(&format!("{GROUPS}---\n{POLICIES}"));
    assert!(!udp_reaches(&lab, "default", "client-b", MONITOR));
    lab.kill_daemon();
    let again = lab.lab(&[
        "up",
        "-d",
        "--web",
        "127.0.0.1:0",
        "-f",
        data("manifests/playground.yaml").to_str().unwrap(),
    ]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    lab.wait_ready(Duration::from_secs(30));
    let listed = lab.ok(&["policy", "get"]);
    assert!(
        listed.contains("CiliumCIDRGroup") && listed.contains("monitoring"),
        "{listed}"
    );
    assert!(!udp_reaches(&lab, "default", "client-b", MONITOR));
    assert!(udp_reaches(&lab, "default", "client-a", ATTACKER));
}
