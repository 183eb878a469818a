//! The story of the first lessons, over real HTTP and FTP inside the pods: the kill chain works
//! with no policy, the secure store keeps strangers out.

use std::time::Duration;

use crate::harness::TestLab;

#[test]
fn the_kill_chain_works_without_policy() {
    let lab = TestLab::up();
    // The xwing lands like anyone else.
    let land = lab.ship("xwing", &["land"]);
    assert_eq!(
        (land["kind"].as_str(), land["status"].as_u64()),
        (Some("ok"), Some(200)),
        "{land}"
    );
    assert_eq!(land["body"], "Ship landed\n");

    // The survey lists the API without the exhaust port.
    let survey = lab.ship("xwing", &["survey"]);
    let body = survey["body"].as_str().unwrap();
    assert!(
        body.contains("request-landing") && !body.contains("exhaust"),
        "{body}"
    );

    // The Deathstar ships its API log to both stores; the vulnerable one gives it to anyone.
    let xwing_ip = lab.pod("xwing")["ip"].as_str().unwrap().to_owned();
    let leaked = testkit::wait_for(Duration::from_secs(15), || {
        let out = lab.ship("xwing", &["fetch-logs", "ftp-vulnerable"]);
        let content = out["content"].as_str().unwrap_or_default().to_owned();
        (out["kind"] == "ftp_ok"
            && content.contains(&format!("{xwing_ip}:"))
            && content.contains("POST /v1/request-landing"))
        .then_some(content)
    });
    assert!(
        leaked.is_some(),
        "the xwing's own requests never showed up on the vulnerable store"
    );

    // Fire: the exhaust port answers 503 and the Deathstar really goes down, then comes back.
    let replicas = lab.replicas("deathstar");
    let fire = lab.ship("xwing", &["fire"]);
    assert_eq!(fire["status"], 503, "{fire}");
    assert!(
        fire["body"]
            .as_str()
            .unwrap()
            .starts_with("Panic: deathstar exploded"),
        "{fire}"
    );
    let restarted = testkit::wait_for(Duration::from_secs(30), || {
        let restarts: u64 = replicas
            .iter()
            .map(|r| lab.pod(r)["restarts"].as_u64().unwrap_or(0))
            .sum();
        let ready = replicas.iter().all(|r| lab.pod(r)["ready"] == true);
        (restarts == 1 && ready).then_some(())
    });
    assert!(
        restarted.is_some(),
        "exactly one replica should have restarted: {:?}",
        replicas.iter().map(|r| lab.pod(r)).collect::<Vec<_>>()
    );
    lab.wait_ready(Duration::from_secs(20));
    let again = lab.ship("tiefighter", &["land"]);
    assert_eq!(again["status"], 200, "{again}");
}

#[test]
fn the_secure_store_refuses_anonymous_access() {
    let lab = TestLab::up();
    let anon = lab.ship("xwing", &["fetch-logs", "ftp-secure"]);
    assert_eq!(anon["kind"], "ftp_denied", "{anon}");
    // The Deathstar's own account sees only its own logs.
    lab.ship("tiefighter", &["land"]);
    let own = testkit::wait_for(Duration::from_secs(15), || {
        let out = lab.secure_store_logs();
        (out["kind"] == "ftp_ok"
            && out["content"]
                .as_str()
                .unwrap_or_default()
                .contains("POST /v1/request-landing"))
        .then_some(out)
    });
    assert!(
        own.is_some(),
        "the Deathstar's logs should be on the secure store under its account"
    );
}
