//! The Deathstar's routes, answers and status codes, and its real death on the exhaust port.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use demo_services::deathstar::{self, ADVERTISED_API, Config, EXPLODED_EXIT_CODE};
use demo_services::ship::{self, Move, Options, Outcome};

use crate::common::{raw_http, start_deathstar};

fn config(pod: &str) -> Config {
    Config {
        pod_name: pod.to_string(),
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survey_describes_the_station_without_the_exhaust_port() {
    let addr = start_deathstar(config("deathstar-7f9c")).await;
    let r = raw_http(addr, "GET", "/v1", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(doc["name"], "Death Star");
    assert_eq!(doc["hostname"], "deathstar-7f9c");
    assert_eq!(doc["model"], "DS-1 Orbital Battle Station");
    let api: Vec<&str> = doc["api"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(api, ADVERTISED_API);
    assert!(!r.body.contains("exhaust"));
    // Pretty printed, as the demo's server answers.
    assert!(r.body.contains("\n  \"name\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_route_answers() {
    let addr = start_deathstar(config("ds")).await;

    let r = raw_http(addr, "POST", "/v1/request-landing", "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "Ship landed\n"));
    assert_eq!(r.header("content-type"), Some("text/plain"));

    // A body and a query string change nothing.
    let r = raw_http(addr, "POST", "/v1/request-landing?ship=tie-1", "{\"x\":1}").await;
    assert_eq!((r.status, r.body.as_str()), (200, "Ship landed\n"));

    let r = raw_http(addr, "GET", "/v1/healthz", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(doc["hostname"], "ds");

    let r = raw_http(addr, "PUT", "/v1/cargobay", "").await;
    assert_eq!(r.status, 200);
    assert!(!r.body.is_empty());

    let r = raw_http(addr, "GET", "/v1/hyper-matter-reactor/status", "").await;
    assert_eq!(r.status, 200);
    assert!(!r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let addr = start_deathstar(config("ds")).await;
    for path in [
        "/",
        "/v2",
        "/v1/",
        "/v1/request-landing/x",
        "/v1/logship-stats",
    ] {
        let r = raw_http(addr, "GET", path, "").await;
        assert_eq!(r.status, 404, "{path}");
    }
    let r = raw_http(addr, "GET", "/v1/request-landing", "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    // The exhaust port only reacts to PUT: a GET must not blow up this test process.
    let r = raw_http(addr, "GET", "/v1/exhaust-port", "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("PUT"));
    let r = raw_http(addr, "DELETE", "/v1", "").await;
    assert_eq!(r.status, 405);
}

/// Set in the child process that hosts a Deathstar which is allowed to die.
const CHILD_ENV: &str = "DEMO_SERVICES_DEATHSTAR_CHILD";

/// Not a test by itself: the body of the child process started by
/// `firing_at_the_exhaust_port_kills_the_process`. Without the variable it does nothing.
#[test]
fn exhaust_port_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("LISTENING {}", listener.local_addr().unwrap());
        let cfg = Config {
            explode_after_ms: 300,
            ..config("doomed")
        };
        deathstar::serve(listener, cfg).await.unwrap();
    });
}

/// Kills the child if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firing_at_the_exhaust_port_kills_the_process() {
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "deathstar::exhaust_port_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let read_addr = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stdout).lines() {
            // The harness prints the test name first, on the same line.
            if let Some((_, addr)) = line.unwrap().split_once("LISTENING ") {
                return addr.trim().parse::<std::net::SocketAddr>().unwrap();
            }
        }
        panic!("the child never said where it listens");
    });
    // On a timeout the child is killed on drop, which ends the reading thread too.
    let addr = tokio::time::timeout(crate::common::PATIENCE, read_addr)
        .await
        .expect("the child starts listening")
        .unwrap();

    // Still alive and serving before the shot.
    let r = raw_http(addr, "POST", "/v1/request-landing", "").await;
    assert_eq!(r.status, 200);

    let opts = Options {
        base_url: format!("http://{addr}"),
        timeout_ms: 5000,
    };
    let outcome = ship::perform(&Move::Fire, &opts).await;
    let Outcome::HttpError { status, body, .. } = &outcome else {
        panic!("expected a 503, got {outcome:?}");
    };
    assert_eq!(*status, 503);
    assert!(body.starts_with("Panic: deathstar exploded"), "{body}");

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the deathstar did not die"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(EXPLODED_EXIT_CODE));

    // And it is gone: the port refuses.
    let after = ship::perform(&Move::Land, &opts).await;
    assert!(matches!(after, Outcome::Refused { .. }), "{after:?}");
}
