//! CiliumNetworkPolicy semantics with real traffic between pods, checked on both the outcome
//! and the flow record that explains it.

use std::time::Duration;

use serde_json::Value;

use crate::harness::TestLab;

const SW_L3_L4: &str = r#"
apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "rule1"
spec:
  description: "L3-L4 policy to restrict deathstar access to empire ships only"
  endpointSelector:
    matchLabels:
      org: empire
      class: deathstar
  ingress:
  - fromEndpoints:
    - matchLabels:
        org: empire
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
"#;

/// The newest flow matching `pred`, waiting briefly for the event to arrive.
fn flow(lab: &TestLab, query: &[&str], pred: impl Fn(&Value) -> bool) -> Value {
    testkit::wait_for(Duration::from_secs(5), || {
        lab.flows(query).into_iter().rev().find(|f| pred(f))
    })
    .unwrap_or_else(|| panic!("no such flow among {:#?}", lab.flows(query)))
}

#[test]
fn the_guides_l3_l4_outcomes() {
    let lab = TestLab::up();
    lab.applied(SW_L3_L4);
    let tie = lab.ship("tiefighter", &["land"]);
    assert_eq!(tie["status"], 200, "{tie}");
    let xwing = lab.ship("xwing", &["land", "--timeout", "2"]);
    assert_eq!(
        xwing["kind"], "timed_out",
        "the xwing's SYN must be dropped silently: {xwing}"
    );
    // The same with curl, as in the guide: exit 28 (timeout).
    let (code, _) = lab.exec(
        "xwing",
        &[
            "curl",
            "-s",
            "-m",
            "2",
            "-XPOST",
            "deathstar.default.svc.cluster.local/v1/request-landing",
        ],
    );
    assert_eq!(code, 28);

    let drop = flow(&lab, &["--pod", "xwing", "--verdict", "DROPPED"], |f| {
        f["traffic_direction"] == "INGRESS"
    });
    assert_eq!(drop["drop_reason_desc"], "POLICY_DENIED");
    assert_eq!(drop["drop_reason"], 133);
    let why = drop["policy_explanation"].as_str().unwrap();
    assert!(
        why.contains("default deny") && why.contains("rule1"),
        "{why}"
    );
    assert_eq!(drop["source"]["pod_name"], "xwing");
    assert!(
        drop["destination"]["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "k8s:class=deathstar")
    );

    let allowed = flow(
        &lab,
        &["--pod", "tiefighter", "--verdict", "FORWARDED"],
        |f| f["traffic_direction"] == "INGRESS" && f["l4"]["TCP"]["destination_port"] == 80,
    );
    assert_eq!(allowed["ingress_allowed_by"][0]["name"], "rule1");
    assert!(
        allowed["ingress_allowed_by"][0]["rule"]
            .as_str()
            .unwrap()
            .contains("ingress[0]")
    );
}

#[test]
fn the_papers_egress_policy_stops_the_log_leak() {
    let lab = TestLab::up();
    lab.applied(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: deathstar-logs-to-updated-stores
spec:
  endpointSelector:
    matchLabels:
      class: deathstar
  egress:
  - toEndpoints:
    - matchLabels:
        status: updated
"#,
    );
    // New requests after the policy: their log lines reach the secure store only.
    let marker = "/v1/request-landing";
    for _ in 0..3 {
        lab.ship("tiefighter", &["land"]);
    }
    let secure = testkit::wait_for(Duration::from_secs(15), || {
        let out = lab.secure_store_logs();
        (out["kind"] == "ftp_ok" && out["content"].as_str().unwrap_or_default().contains(marker))
            .then_some(out)
    });
    assert!(secure.is_some(), "the secure store must still get the logs");
    let leaked = lab.ship("xwing", &["fetch-logs", "ftp-vulnerable"]);
    let content = leaked["content"].as_str().unwrap_or_default();
    assert!(
        !content.contains(marker),
        "nothing may reach the vulnerable store: {content}"
    );
    let drop = flow(&lab, &["--verdict", "DROPPED"], |f| {
        f["destination"]["pod_name"] == "ftp-vulnerable" && f["traffic_direction"] == "EGRESS"
    });
    assert!(
        drop["policy_explanation"]
            .as_str()
            .unwrap()
            .contains("deathstar-logs-to-updated-stores")
    );
}

#[test]
fn a_bad_document_leaves_the_previous_policy_in_force() {
    let lab = TestLab::up();
    lab.applied(SW_L3_L4);
    let bad = format!(
        "{SW_L3_L4}---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: broken\nspec:\n  endpointSelector: {{}}\n  ingress:\n  - fromEndpoint:\n    - {{}}\n"
    );
    let out = lab.apply(&bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fromEndpoint") && err.contains("fromEndpoints") && err.contains(":"),
        "{err}"
    );
    let names: Vec<Value> = lab
        .json(&["policy", "get", "-o", "json"])
        .as_array()
        .cloned()
        .unwrap();
    assert_eq!(names.len(), 1);
    assert_eq!(
        lab.ship("xwing", &["land", "--timeout", "1"])["kind"],
        "timed_out"
    );
    assert_eq!(lab.ship("tiefighter", &["land"])["status"], 200);

    // Two bad files: the errors of both are shown, each naming its file and line.
    let dir = std::env::temp_dir().join(format!("{}-bad-files", lab.instance));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.yaml"),
        SW_L3_L4.replace("port: \"80\"", "port: 80"),
    )
    .unwrap();
    std::fs::write(dir.join("b.yaml"), "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: empty\nspec:\n  endpointSelector: {}\n").unwrap();
    let out = lab.lab(&["policy", "apply", "-f", dir.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.yaml:") && err.contains("quote it") && err.contains("b.yaml:5:1: spec"),
        "{err}"
    );
}

#[test]
fn audit_mode_per_policy_forwards_and_reports() {
    let lab = TestLab::up();
    lab.applied(SW_L3_L4);
    lab.ok(&["policy", "audit", "rule1", "on"]);
    let xwing = lab.ship("xwing", &["land"]);
    assert_eq!(xwing["status"], 200, "audit mode must forward: {xwing}");
    let audit = flow(&lab, &["--pod", "xwing", "--verdict", "AUDIT"], |f| {
        f["traffic_direction"] == "INGRESS"
    });
    assert_eq!(audit["drop_reason_desc"], "POLICY_DENIED");
    assert!(
        audit["policy_explanation"]
            .as_str()
            .unwrap()
            .contains("would be dropped")
    );
    lab.ok(&["policy", "audit", "rule1", "off"]);
    assert_eq!(
        lab.ship("xwing", &["land", "--timeout", "1"])["kind"],
        "timed_out"
    );
}

/// A TCP connect from inside a pod's namespace, bypassing the lab (which may be dead).
fn connects(lab: &TestLab, pod: &str, ip: std::net::Ipv4Addr, port: u16) -> bool {
    let ns = std::path::PathBuf::from("/run/netns").join(format!("{}-default-{pod}", lab.instance));
    testkit::in_netns(&ns, move || {
        std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_millis(500)).is_ok()
    })
    .unwrap()
}

#[test]
fn enforcement_survives_the_lab_process_and_a_restart_has_no_gap() {
    let lab = TestLab::up();
    lab.applied(SW_L3_L4);
    let ds: std::net::Ipv4Addr = lab.pod(&lab.replicas("deathstar")[0])["ip"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    lab.kill_daemon();
    // The lab is dead; its pinned programs and maps still enforce rule1.
    assert!(
        connects(&lab, "tiefighter", ds, 80),
        "allowed traffic keeps flowing"
    );
    assert!(
        !connects(&lab, "xwing", ds, 80),
        "fail closed: the xwing stays out"
    );

    // Probe from the xwing all through the restart: not one connection may get through.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop2, instance) = (stop.clone(), lab.instance.clone());
    let prober = std::thread::spawn(move || {
        let ns = std::path::PathBuf::from("/run/netns").join(format!("{instance}-default-xwing"));
        let mut tries = 0;
        let mut got_in = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let ok = testkit::in_netns(&ns, move || {
                std::net::TcpStream::connect_timeout(&(ds, 80).into(), Duration::from_millis(100))
                    .is_ok()
            })
            .unwrap_or(false);
            tries += 1;
            got_in += usize::from(ok);
        }
        (tries, got_in)
    });
    let out = lab.lab(&["up", "-d", "--web", "127.0.0.1:0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.wait_ready(Duration::from_secs(30));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (tries, got_in) = prober.join().unwrap();
    assert!(tries > 5, "the prober ran {tries} times");
    assert_eq!(got_in, 0, "the xwing got in during the restart");

    let policies = lab.json(&["policy", "get", "-o", "json"]);
    assert_eq!(policies.as_array().unwrap().len(), 1, "rule1 is restored");
    assert_eq!(lab.ship("tiefighter", &["land"])["status"], 200);
    assert_eq!(
        lab.ship("xwing", &["land", "--timeout", "1"])["kind"],
        "timed_out"
    );
}

#[test]
fn lab_wide_audit_mode_and_verdict_metrics() {
    let lab = TestLab::up();
    lab.applied(SW_L3_L4);
    lab.ok(&["policy", "audit-mode", "on"]);
    assert_eq!(
        lab.ship("xwing", &["land"])["status"],
        200,
        "audit mode forwards"
    );
    let audit = flow(&lab, &["--pod", "xwing", "--verdict", "AUDIT"], |f| {
        f["traffic_direction"] == "INGRESS"
    });
    assert_eq!(audit["drop_reason_desc"], "POLICY_DENIED");
    lab.ok(&["policy", "audit-mode", "off"]);
    assert_eq!(
        lab.ship("xwing", &["land", "--timeout", "1"])["kind"],
        "timed_out"
    );
    let metrics = lab.ok(&["metrics"]);
    for needle in [
        "hubble_policy_verdicts_total{direction=\"ingress\",match=\"none\",action=\"audit\"}",
        "hubble_policy_verdicts_total{direction=\"ingress\",match=\"none\",action=\"dropped\"}",
        "cilium_drop_count_total{direction=\"INGRESS\",reason=\"Policy denied\"}",
        "cilium_forward_count_total{direction=\"EGRESS\"}",
        "lab_policy_audit_mode 0",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
}
