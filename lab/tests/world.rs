//! The 72-hour exposure: an internal service behind a NodePort, an attacker on the internet and
//! a monitoring host in 10.0.0.0/8, the wildcard-CIDR mistake and its fix, the XDP prefilter,
//! the unsafe bypass, and the dry-run metrics that would have caught it.

use std::time::Duration;

use crate::harness::TestLab;

const NODE: &str = "http://203.0.113.10:30007/";

fn inventory_policy(cidr: &str, audit: bool) -> String {
    let annotations = if audit {
        "\n  annotations:\n    policy.lab.dev/audit-mode: \"true\""
    } else {
        ""
    };
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: inventory-health-checks{annotations}\nspec:\n  endpointSelector:\n    matchLabels:\n      app: inventory\n  ingress:\n  - fromCIDR:\n    - {cidr}\n    toPorts:\n    - ports:\n      - port: \"8080\"\n        protocol: TCP\n"
    )
}

/// Whether a host outside the cluster gets the customer records through the NodePort.
fn leaks(lab: &TestLab, host: &str) -> bool {
    lab.exec(host, &["curl", "-s", "-m", "1.5", NODE])
        .1
        .contains("Leia Organa")
}

fn metric(lab: &TestLab, prefix: &str) -> u64 {
    lab.ok(&["metrics"])
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_wildcard_cidr_exposes_the_nodeport_and_the_fix_closes_it() {
    let lab = TestLab::up();
    assert!(
        leaks(&lab, "attacker") && leaks(&lab, "monitor"),
        "no policy: the NodePort is open to all"
    );
    lab.applied(&inventory_policy("0.0.0.0/0", false));
    assert!(
        leaks(&lab, "attacker"),
        "fromCIDR 0.0.0.0/0 lets the internet in"
    );
    let internet = r#"lab_nodeport_connections_total{service="default/inventory",node_port="30007",source="internet"}"#;
    assert!(
        metric(&lab, internet) >= 2,
        "the exposure shows in the NodePort metric"
    );

    lab.applied(&inventory_policy("10.0.0.0/8", false));
    assert!(!leaks(&lab, "attacker"), "the fix keeps the internet out");
    assert!(
        leaks(&lab, "monitor"),
        "and the monitoring host keeps its access"
    );
    let drop = testkit::wait_for(Duration::from_secs(5), || {
        lab.flows(&["--verdict", "DROPPED"])
            .into_iter()
            .rev()
            .find(|f| f["IP"]["source"] == "198.51.100.66")
    })
    .expect("a drop of the attacker");
    assert_eq!(
        drop["destination"]["pod_name"]
            .as_str()
            .map(|p| p.starts_with("inventory-")),
        Some(true)
    );
    assert!(
        drop["policy_explanation"]
            .as_str()
            .unwrap()
            .contains("inventory-health-checks"),
        "{drop}"
    );
    // Outside hosts reach the node only, never the pod network directly.
    let pod_ip = lab
        .pods()
        .into_iter()
        .find(|p| p["owner"] == "inventory")
        .unwrap()["ip"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(
        lab.exec(
            "monitor",
            &["curl", "-s", "-m", "1", &format!("http://{pod_ip}:8080/")]
        )
        .0,
        0
    );
}

#[test]
fn the_prefilter_drops_listed_cidrs_at_xdp() {
    let lab = TestLab::up();
    lab.ok(&["prefilter", "update", "--cidr", "198.51.100.0/24"]);
    assert!(!leaks(&lab, "attacker"));
    assert!(leaks(&lab, "monitor"), "unlisted sources pass");
    let drop = testkit::wait_for(Duration::from_secs(5), || {
        lab.flows(&["--verdict", "DROPPED"])
            .into_iter()
            .rev()
            .find(|f| f["drop_reason_desc"] == "PREFILTER_DENIED")
    })
    .expect("an XDP drop");
    assert_eq!(drop["IP"]["source"], "198.51.100.66");
    assert!(
        metric(
            &lab,
            r#"cilium_drop_count_total{direction="INGRESS",reason="Denied by prefilter"}"#
        ) > 0
    );
    assert!(lab.ok(&["prefilter", "list"]).contains("198.51.100.0/24"));
    lab.ok(&["prefilter", "delete", "--cidr", "198.51.100.0/24"]);
    assert!(leaks(&lab, "attacker"));
    let bad = lab.lab(&["prefilter", "update", "--cidr", "198.51.100.0/33"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an IPv4 CIDR"));
}

#[test]
fn the_unsafe_bypass_skips_policy_as_in_the_story() {
    let lab = TestLab::up();
    lab.applied(&inventory_policy("10.0.0.0/8", false));
    assert!(!leaks(&lab, "attacker"));
    let refused = lab.lab(&["prefilter", "bypass", "--node-port", "30007"]);
    assert!(!refused.status.success(), "the bypass needs --unsafe");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--unsafe"));
    let on = lab.ok(&["prefilter", "bypass", "--node-port", "30007", "--unsafe"]);
    assert!(on.contains("UNSAFE"), "{on}");
    assert!(
        leaks(&lab, "attacker"),
        "with the bypass, policy is skipped"
    );
    let flow = testkit::wait_for(Duration::from_secs(5), || {
        lab.flows(&["--verdict", "FORWARDED"])
            .into_iter()
            .rev()
            .find(|f| {
                f["IP"]["source"] == "198.51.100.66"
                    && f["policy_explanation"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("WITHOUT")
            })
    });
    assert!(flow.is_some(), "the flow says the policy was skipped");
    lab.ok(&["prefilter", "bypass", "--node-port", "30007", "--off"]);
    assert!(!leaks(&lab, "attacker"));
}

#[test]
fn a_policy_in_audit_mode_can_be_watched_before_it_is_enforced() {
    let lab = TestLab::up();
    lab.applied(&inventory_policy("10.0.0.0/8", true));
    assert!(leaks(&lab, "attacker"), "audit mode forwards");
    assert!(leaks(&lab, "monitor"));
    let drops = r#"lab_policy_dry_run_total{policy="default/inventory-health-checks",verdict="would_drop"}"#;
    let allows = r#"lab_policy_dry_run_total{policy="default/inventory-health-checks",verdict="would_allow"}"#;
    let ok = testkit::wait_for(Duration::from_secs(5), || {
        (metric(&lab, drops) >= 1 && metric(&lab, allows) >= 1).then_some(())
    });
    assert!(ok.is_some(), "{}", lab.ok(&["metrics"]));
}
