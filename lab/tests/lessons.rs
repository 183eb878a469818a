//! Lessons 5 (the NodePort exposure) and 6 (connection limits), every step run for real
//! through the API the lesson page uses (`POST /api/lessons/ID/steps/N`, and `?wait` for a
//! step that runs in the background), and the incident exercise checked with its starter
//! policy (wrong, also for the auditor) and its solution (right). Each lesson has its own lab.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::harness::TestLab;

/// The web address of a lab, from `lab status`.
fn web_address(lab: &TestLab) -> String {
    let status = lab.ok(&["status"]);
    status
        .lines()
        .find_map(|l| l.trim().strip_prefix("Web lab:"))
        .map(|a| a.trim().trim_end_matches('/').to_owned())
        .unwrap_or_else(|| panic!("no web address in `lab status`:\n{status}"))
}

/// One HTTP/1.1 request to the web address, as the page's `fetch` makes it.
fn request(base: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connecting to the web address");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        rest.to_owned()
    };
    (
        status,
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {status} {body}")),
    )
}

/// Runs a lesson's steps in order and checks each came out as expected. A background step
/// must answer `running`; its result is collected (`?wait`) after the step named in `collect`
/// as `(after, step)`. Steps in `retry` may be run again for a few seconds (the lesson tells
/// the student to do so).
fn walk(lab: &TestLab, id: &str, collect: &[(usize, usize)], retry: &[usize]) -> Vec<Value> {
    let base = web_address(lab);
    let (status, lesson) = request(&base, "GET", &format!("/api/lessons/{id}"), None);
    assert_eq!(status, 200, "{lesson}");
    let steps = lesson["steps"].as_array().unwrap();
    let mut failures = Vec::new();
    let mut runs = Vec::new();
    let mut background = Vec::new();
    let show = |n: usize, run: &Value| {
        format!(
            "step {n} ({}): {} — expected: {}; checks: {} {} {}",
            steps[n - 1]["title"],
            run["summary"],
            run["expected"],
            run["output_check"],
            run["flow_checks"],
            run["checks"]
        )
    };
    for step in steps {
        let n = step["n"].as_u64().unwrap() as usize;
        let path = format!("/api/lessons/{id}/steps/{n}");
        let deadline = Instant::now() + Duration::from_secs(6);
        let run = loop {
            let (status, run) = request(&base, "POST", &path, None);
            assert_eq!(status, 200, "step {n}: {run}");
            if run["pass"] == true || !retry.contains(&n) || Instant::now() > deadline {
                break run;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        eprintln!("{id}: {}", show(n, &run));
        if run["background"] == "running" {
            background.push(n);
        } else if run["pass"] != true {
            failures.push(show(n, &run));
        }
        runs.push(run);
        for (_, b) in collect.iter().filter(|(after, _)| *after == n) {
            let (status, done) = request(
                &base,
                "POST",
                &format!("/api/lessons/{id}/steps/{b}?wait"),
                None,
            );
            assert_eq!(status, 200, "the result of step {b}: {done}");
            eprintln!("{id}: (background) {}", show(*b, &done));
            assert_eq!(done["background"], "done");
            if done["pass"] != true {
                failures.push(show(*b, &done));
            }
            runs[*b - 1] = done;
        }
    }
    let expected_background: Vec<usize> = collect.iter().map(|(_, b)| *b).collect();
    assert_eq!(
        background, expected_background,
        "the steps that ran in the background"
    );
    assert!(
        failures.is_empty(),
        "not as expected:\n{}",
        failures.join("\n")
    );
    runs
}

fn check(lab: &TestLab, exercise: &str, policy: &str) -> Value {
    let base = web_address(lab);
    let (status, run) = request(
        &base,
        "POST",
        &format!("/api/exercises/{exercise}/check"),
        Some(&json!({ "policy": policy })),
    );
    assert_eq!(status, 200, "{run}");
    run
}

#[test]
fn lesson_5_replays_the_exposure_and_the_exercise_grades_the_fix() {
    let lab = TestLab::up();
    let runs = walk(&lab, "05-nodeport-exposure", &[], &[]);
    assert!(runs.len() >= 20);
    // The lesson leaves the prefilter empty and the fixed policy enforced.
    let pf = lab.ok(&["prefilter", "list"]);
    assert!(
        pf.contains("deny nothing") && !pf.contains("UNSAFE"),
        "{pf}"
    );

    // The exercise: leftovers in the prefilter do not count, the starter (the incident's
    // policy) is wrong twice, the solution is right.
    lab.ok(&["prefilter", "bypass", "--node-port", "30007", "--unsafe"]);
    lab.ok(&["prefilter", "update", "--cidr", "198.51.100.0/24"]);
    let base = web_address(&lab);
    let (_, ex) = request(&base, "GET", "/api/exercises/4-incident-fix", None);
    let wrong = check(&lab, "4-incident-fix", ex["starter"].as_str().unwrap());
    assert!(
        wrong["prefilter"].as_str().unwrap().contains("--off"),
        "{wrong}"
    );
    assert_eq!(wrong["passed"], false);
    assert_eq!(wrong["probes"][0]["right"], false, "the attacker gets in");
    assert_eq!(wrong["probes"][1]["right"], true);
    assert_eq!(wrong["audit"]["right"], false);
    assert!(
        wrong["audit"]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "wildcard-cidr" && f["counts"] == true),
        "{wrong}"
    );
    let right = check(&lab, "4-incident-fix", ex["solution"].as_str().unwrap());
    assert_eq!(right["passed"], true, "{right}");
    assert_eq!(right["total"], 3);
}

#[test]
fn lesson_6_a_limit_restores_service_during_a_flood() {
    let lab = TestLab::up();
    // Step 3 (the first flood) ends before the limit; step 6 (the second) before the last
    // step, which looks for the counts back at zero.
    let runs = walk(&lab, "06-connection-limits", &[(4, 3), (10, 6)], &[11]);
    let first = &runs[2]["outcome"];
    assert_eq!(first["refused"], 0, "{first}");
    let second = &runs[5]["outcome"];
    assert!(second["refused"].as_u64().unwrap() > 150, "{second}");
    assert!(second["connected"].as_u64().unwrap() <= 8, "{second}");
    // The X-wing's refusal came at once, not after its time limit.
    let refused = &runs[7]["outcome"];
    assert!(refused["elapsed_ms"].as_u64().unwrap() < 1000, "{refused}");
}
