//! Pods on one VM: the default cluster, services and DNS, custom manifests, restarts, cleanup.

use std::{collections::BTreeSet, time::Duration};

use crate::harness::{LAB, TestLab, data, leftovers};

#[test]
fn both_ships_land_by_service_name() {
    let lab = TestLab::up();
    for ship in ["tiefighter", "xwing"] {
        let (code, out) = lab.exec(
            ship,
            &[
                "curl",
                "-s",
                "-m",
                "5",
                "-XPOST",
                "deathstar.default.svc.cluster.local/v1/request-landing",
            ],
        );
        assert_eq!((code, out.as_str()), (0, "Ship landed\n"), "{ship}");
    }
    // Short names resolve through the pod's search path, like in Kubernetes.
    let (code, out) = lab.exec("xwing", &["curl", "-s", "-m", "5", "http://deathstar/v1"]);
    assert_eq!(code, 0);
    assert!(out.contains("Death Star"), "{out}");
    // The pod's own hostname is its name.
    assert_eq!(lab.exec("xwing", &["hostname"]).1.trim(), "xwing");
}

#[test]
fn calls_spread_over_both_replicas() {
    let lab = TestLab::up();
    let replicas: BTreeSet<String> = lab.replicas("deathstar").into_iter().collect();
    assert_eq!(replicas.len(), 2);
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let outcome = lab.ship("tiefighter", &["survey"]);
        assert_eq!(outcome["kind"], "ok", "{outcome}");
        let body: serde_json::Value =
            serde_json::from_str(outcome["body"].as_str().unwrap()).unwrap();
        seen.insert(body["hostname"].as_str().unwrap().to_owned());
        if seen == replicas {
            break;
        }
    }
    assert_eq!(seen, replicas, "calls reached only {seen:?}");
}

#[test]
fn custom_manifest_with_its_own_labels() {
    let lab = TestLab::up_with(&[&data("manifests/echo.yaml")]);
    let pods = lab.pods();
    let web: Vec<_> = pods
        .iter()
        .filter(|p| p["labels"]["app"] == "web")
        .collect();
    assert_eq!(web.len(), 3, "{pods:#?}");
    assert!(web.iter().all(|p| p["namespace"] == "shop"));
    // `get` by name looks in the namespace given, as kubectl does, and a miss is an error.
    let client = lab.json(&["get", "pods", "client", "-n", "shop", "-o", "json"]);
    assert_eq!(client.as_array().map(Vec::len), Some(1), "{client}");
    let miss = lab.lab(&["get", "pods", "client"]);
    assert!(!miss.status.success());
    assert!(
        String::from_utf8_lossy(&miss.stderr).contains("pods \"client\" not found"),
        "{miss:?}"
    );
    let (code, out) = lab.exec(
        "shop/client",
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "http://web.shop.svc.cluster.local:8080/anything",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "welcome to the shop\n"));
    // From another namespace the short name does not resolve, the qualified one does.
    let (code, _) = lab.exec(
        "default/probe",
        &["curl", "-s", "-m", "5", "http://web:8080/"],
    );
    assert_ne!(code, 0);
    let (code, out) = lab.exec(
        "default/probe",
        &["curl", "-s", "-m", "5", "http://web.shop:8080/"],
    );
    assert_eq!((code, out.as_str()), (0, "welcome to the shop\n"));
}

#[test]
fn a_killed_workload_is_restarted() {
    let lab = TestLab::up();
    let pod = lab.replicas("deathstar").remove(0);
    let pid = lab.pod(&pod)["pid"].as_i64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarted = testkit::wait_for(Duration::from_secs(20), || {
        let p = lab.pod(&pod);
        (p["restarts"] == 1 && p["ready"] == true).then_some(p)
    });
    let p = restarted.unwrap_or_else(|| panic!("not restarted: {}", lab.pod(&pod)));
    assert_ne!(p["pid"].as_i64().unwrap() as i32, pid);
    assert_eq!(p["last_exit"], "killed by signal 9");
    let describe = lab.ok(&["describe", "pod", &pod]);
    assert!(describe.contains("Restarts:     1"), "{describe}");
}

#[test]
fn down_leaves_nothing_behind() {
    let mut lab = TestLab::up();
    assert!(!lab.leftovers().is_empty(), "the lab should exist while up");
    lab.down();
    assert!(lab.leftovers().is_empty());
    // A second `down` is a harmless no-op.
    let out = lab.lab(&["down"]);
    assert!(out.status.success());
}

#[test]
fn after_kill_9_of_the_lab_up_takes_over_or_cleans_up() {
    let mut lab = TestLab::up();
    lab.kill_daemon();
    assert!(
        !lab.leftovers().is_empty(),
        "a killed lab leaves its cluster running"
    );
    // `lab up` with the same manifests takes the running cluster over.
    let out = lab.lab(&["up", "-d", "--web", "127.0.0.1:0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Taking over"), "{text}");
    lab.wait_ready(Duration::from_secs(30));
    assert_eq!(lab.ship("xwing", &["land"])["status"], 200);
    // `--fresh` removes the previous run's leftovers by its record and starts anew.
    lab.kill_daemon();
    let out = lab.lab(&["up", "-d", "--fresh", "--web", "127.0.0.1:0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("previous run") && text.contains("removed netns"),
        "{text}"
    );
    lab.wait_ready(Duration::from_secs(30));
    // And `lab down` after another kill -9 removes everything.
    lab.kill_daemon();
    lab.down();
}

#[test]
fn an_invalid_manifest_creates_nothing() {
    testkit::require_root();
    let instance = testkit::unique_name("lt");
    let file = data("manifests/invalid/pod_errors.yaml");
    let out = std::process::Command::new(LAB)
        .args([
            "--instance",
            &instance,
            "up",
            "--web",
            "127.0.0.1:0",
            "-f",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("pod_errors.yaml:"), "{err}");
    assert!(
        leftovers(&instance).is_empty(),
        "{:?}",
        leftovers(&instance)
    );
}

#[test]
fn a_second_up_of_the_same_lab_is_refused() {
    let lab = TestLab::up();
    // The same web address as the running lab: being up already is the reason to give.
    let web = crate::browser::web_address(&lab);
    let out = lab.lab(&["up", "--web", web.trim_start_matches("http://")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    // The running lab is untouched.
    lab.wait_ready(Duration::from_secs(5));
}

#[test]
fn a_namespace_deleted_by_hand_is_reported() {
    let lab = TestLab::up();
    let status = std::process::Command::new("ip")
        .args(["netns", "del", &format!("{}-default-xwing", lab.instance)])
        .status()
        .unwrap();
    assert!(status.success());
    let p = lab.pod("xwing");
    assert_eq!(p["phase"], "NetworkMissing", "{p}");
}

/// Pods carry their own service account into their identity (Cilium's
/// `io.cilium.k8s.policy.serviceaccount` label), so Cilium's service-account example policy
/// lets luke (and only luke) GET leia's `/public`.
#[test]
fn service_accounts_select_pods_as_in_cilium() {
    let lab = TestLab::up_with(&[&data("manifests/service-accounts.yaml")]);
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../enforcer/tests/data/cilium-corpus/examples/policies/kubernetes/serviceaccount/serviceaccount-policy.yaml",
    );
    lab.ok(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    let get = |from: &str, path: &str| {
        lab.exec(
            from,
            &[
                "curl",
                "-s",
                "-m",
                "3",
                &format!("http://leia.default.svc.cluster.local{path}"),
            ],
        )
    };
    assert_eq!(
        get("luke-pod", "/public"),
        (0, "help me, Obi-Wan\n".to_owned())
    );
    // Only `/public` (the policy's HTTP rule): the proxy answers 403 as Cilium's does.
    assert_eq!(get("luke-pod", "/"), (0, "Access denied\r\n".to_owned()));
    let (code, out) = get("vader-pod", "/public");
    assert_eq!(code, 28, "vader got through: {out}");
    let flows = lab.flows(&["--pod", "vader-pod", "--verdict", "DROPPED"]);
    assert!(!flows.is_empty(), "no drop recorded for vader");
}

#[test]
fn a_service_account_that_does_not_exist_is_refused() {
    testkit::require_root();
    let instance = testkit::unique_name("lt");
    let file = std::env::temp_dir().join(format!("{instance}-sa.yaml"));
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: luke\nspec:\n  serviceAccountName: luke\n  containers:\n  - name: c\n    image: lab/ship\n",
    )
    .unwrap();
    let out = std::process::Command::new(LAB)
        .args(["--instance", &instance, "up", "--web", "127.0.0.1:0", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no ServiceAccount \"luke\" is defined in namespace default"),
        "{err}"
    );
    assert!(
        leftovers(&instance).is_empty(),
        "{:?}",
        leftovers(&instance)
    );
}
