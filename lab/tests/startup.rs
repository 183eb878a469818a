//! Start-up that fails part-way: `LAB_FAIL_AT=STEP` makes `lab up` fail right after STEP, and
//! the failure must undo exactly what was created — no panic, an error that says what happened
//! and what to do, nothing left behind — so that the next `lab up` works.

use std::process::{Command, Output};

use crate::harness::{LAB, TestLab, leftovers};

/// Every step of the default cluster's start-up, in order, with the progress line that shows
/// the step was done before it failed.
const STEPS: &[(&str, &str)] = &[
    ("mounts", "mounted bpffs and cgroup2"),
    ("node", "node namespace"),
    ("datapath", "eBPF datapath loaded"),
    ("proxy", "L7 proxy listening"),
    ("world", "outside world"),
    ("service default/deathstar", "service default/deathstar"),
    (
        "service kube-system/kube-dns",
        "service kube-system/kube-dns",
    ),
    ("pod default/xwing", ""),
    ("endpoints", ""),
    ("dns", "pod default/xwing"),
    ("process default/tiefighter", "pod default/tiefighter"),
    ("web", "all pods running"),
];

fn up_failing_at(instance: &str, step: &str, detach: bool) -> Output {
    let mut args = vec!["--instance", instance, "up", "--web", "127.0.0.1:0"];
    if detach {
        args.push("-d");
    }
    Command::new(LAB)
        .args(&args)
        .env("LAB_FAIL_AT", step)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("running lab up")
}

fn check_undone(instance: &str, step: &str, shown: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}{stderr}");
    assert!(!out.status.success(), "{step}: lab up succeeded:\n{all}");
    assert!(
        all.contains(&format!("after the start-up step {step:?}")),
        "{step}: the error does not say what failed:\n{all}"
    );
    assert!(
        all.contains("Everything it had created was removed") && all.contains("run `lab up` again"),
        "{step}: the error does not say it was undone and what to do:\n{all}"
    );
    assert!(
        !all.contains("panicked") && !all.contains("stack backtrace"),
        "{step}: a panic:\n{all}"
    );
    assert!(
        all.contains(shown),
        "{step}: the step's progress line {shown:?} is missing:\n{all}"
    );
    let left = leftovers(instance);
    assert!(left.is_empty(), "{step}: left behind {left:?}\n{all}");
}

#[test]
fn a_failure_at_any_start_up_step_undoes_everything() {
    testkit::require_root();
    let instance = testkit::unique_name("lt");
    // Whatever happens, nothing of this instance stays.
    let _guard = Down(&instance);
    for (step, shown) in STEPS {
        let out = up_failing_at(&instance, step, false);
        check_undone(&instance, step, shown, &out);
    }
    // In the background too: the error reaches the terminal that ran `lab up -d`.
    let out = up_failing_at(&instance, "process default/tiefighter", true);
    check_undone(&instance, "process default/tiefighter", "", &out);
    // And the next `lab up` works.
    let mut lab = TestLab::up_as(&instance);
    lab.down();
}

/// Runs `lab down` for an instance when dropped (a failing test leaves nothing either).
struct Down<'a>(&'a str);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = Command::new(LAB)
            .args(["--instance", self.0, "down"])
            .output();
    }
}
