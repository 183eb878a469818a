//! `lab audit`: every class of problem found in fixtures (policies with the manifests they
//! apply to), silence on a clean set, and the live prefilter bypass.

use serde_json::Value;

use crate::harness::{LAB, TestLab, data};

/// `lab audit --offline -f base.yaml -f FIXTURE -o json` → (exit code, findings).
fn offline(fixture: &str) -> (i32, Vec<Value>) {
    let base = data("audit/base.yaml");
    let file = data(&format!("audit/{fixture}"));
    let out = std::process::Command::new(LAB)
        .args([
            "--instance",
            "no-such-lab",
            "audit",
            "--offline",
            "-o",
            "json",
        ])
        .args(["-f", base.to_str().unwrap(), "-f", file.to_str().unwrap()])
        .output()
        .unwrap();
    let findings: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), findings)
}

/// `lab audit --offline -f base.yaml -f FIXTURE` when the files are refused: (exit code, stderr).
fn offline_refused(fixture: &str) -> (i32, String) {
    let base = data("audit/base.yaml");
    let file = data(&format!("audit/{fixture}"));
    let out = std::process::Command::new(LAB)
        .args(["--instance", "no-such-lab", "audit", "--offline"])
        .args(["-f", base.to_str().unwrap(), "-f", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Audit and apply share one decision (enforcer::policy::accept): what apply refuses, audit
/// refuses with the same error; what apply takes (a ConnectionLimit too), audit takes.
#[test]
fn audit_accepts_exactly_what_apply_accepts() {
    let (code, err) = offline_refused("apply-refuses.yaml");
    assert_ne!(code, 0);
    assert!(
        err.contains("apply-refuses.yaml:15:")
            && err.contains("`authentication` is valid Cilium but not supported"),
        "{err}"
    );
    // Accepted: audited (base.yaml's NodePort stays unguarded), not refused.
    let (_, findings) = offline("limit.yaml");
    assert!(
        findings
            .iter()
            .all(|f| f["check"] == "nodeport-without-ingress-policy"),
        "{findings:?}"
    );
}

fn has(findings: &[Value], check: &str, file: &str) -> bool {
    findings
        .iter()
        .any(|f| f["check"] == check && f["location"].as_str().unwrap_or_default().contains(file))
}

#[test]
fn a_clean_policy_set_has_no_findings() {
    let (code, findings) = offline("clean.yaml");
    assert_eq!(findings, Vec::<Value>::new());
    assert_eq!(code, 0);
}

#[test]
fn each_class_of_problem_is_found_with_its_line() {
    for (fixture, check, line) in [
        ("wildcard.yaml", "wildcard-cidr", ":10 "),
        ("world-entity.yaml", "world-entity", ":10 "),
        ("empty-list.yaml", "empty-allow-list", ":10 "),
        ("selects-nothing.yaml", "selects-nothing", ":7 "),
        ("shadowed.yaml", "shadowed-rule", ":10 "),
        ("l7-cancelled.yaml", "l7-cancelled", ":12 "),
        ("ipv6.yaml", "ipv6-no-effect", ":13 "),
        ("missing-cidr-group.yaml", "selects-nothing", ":12 "),
        ("missing-cidr-group.yaml", "ipv6-no-effect", ":24 "),
        ("icmpv6.yaml", "ipv6-no-effect", ":14 "),
        ("policy-types.yaml", "policy-types-mismatch", ":11 "),
    ] {
        let (code, findings) = offline(fixture);
        let f = findings
            .iter()
            .find(|f| f["check"] == check)
            .unwrap_or_else(|| panic!("{fixture}: no {check} in {findings:#?}"));
        let location = f["location"].as_str().unwrap();
        assert!(
            location.contains(fixture) && location.contains(line),
            "{fixture}: {location}"
        );
        for field in ["why", "fix", "problem"] {
            assert!(
                !f[field].as_str().unwrap_or_default().is_empty(),
                "{fixture}: {field}"
            );
        }
        let expect_failure = findings.iter().any(|f| f["severity"] != "low");
        assert_eq!(code, i32::from(expect_failure), "{fixture}: exit code");
    }
    // The NodePort check names the service.
    let (code, findings) = offline("unguarded.yaml");
    assert!(
        has(
            &findings,
            "nodeport-without-ingress-policy",
            "service default/inventory"
        ),
        "{findings:#?}"
    );
    assert_eq!(code, 1);
    // Only the entry naming a missing group selects nothing: the selected group exists.
    let (_, findings) = offline("missing-cidr-group.yaml");
    let nothing: Vec<&str> = findings
        .iter()
        .filter(|f| f["check"] == "selects-nothing")
        .map(|f| f["problem"].as_str().unwrap())
        .collect();
    assert_eq!(nothing.len(), 1, "{findings:#?}");
    assert!(nothing[0].contains("`partner-networks`"), "{nothing:?}");
}

#[test]
fn the_live_lab_is_audited_with_the_prefilter_bypass() {
    let lab = TestLab::up();
    let audit = |args: &[&str]| {
        let mut all = vec!["audit", "-o", "json"];
        all.extend_from_slice(args);
        let out = lab.lab(&all);
        let findings: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code().unwrap(), findings)
    };
    // The default cluster's inventory NodePort has no policy yet.
    let (code, findings) = audit(&[]);
    assert!(
        has(&findings, "nodeport-without-ingress-policy", "inventory"),
        "{findings:#?}"
    );
    assert_eq!(code, 1);
    // A file checked against the live lab before it is applied.
    let wildcard = data("audit/wildcard.yaml");
    let (_, findings) = audit(&["-f", wildcard.to_str().unwrap()]);
    assert!(
        has(&findings, "wildcard-cidr", "wildcard.yaml"),
        "{findings:#?}"
    );
    assert!(!has(
        &findings,
        "nodeport-without-ingress-policy",
        "inventory"
    ));
    // The bypass is critical.
    lab.ok(&["prefilter", "bypass", "--node-port", "30007", "--unsafe"]);
    let (_, findings) = audit(&[]);
    let bypass = findings
        .iter()
        .find(|f| f["check"] == "prefilter-bypass")
        .expect("bypass finding");
    assert_eq!(bypass["severity"], "critical");
    // The text output explains.
    let text = lab.lab(&["audit"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("CRITICAL [prefilter-bypass]") && text.contains("fix:"),
        "{text}"
    );
}
