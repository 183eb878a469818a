//! Log shipping from a real Deathstar into real FTP stores: files and lines arrive, each target
//! on its own, and a dead store costs drops, not API answers.

use std::net::SocketAddr;
use std::path::Path;

use demo_services::deathstar::Config;
use demo_services::ftpstore::Mode;
use demo_services::logship::{self, ApiRecord, LogShipper, Target};

use crate::common::{
    closed_port, eventually, log_files, log_lines, loopback_listener, raw_http, secure_mode,
    start_deathstar, start_store,
};

fn target(name: &str, addr: SocketAddr, user: Option<(&str, &str)>, dir: &str) -> Target {
    Target {
        name: name.to_string(),
        addr: addr.to_string(),
        user: user.map(|(u, _)| u.to_string()),
        password: user.map(|(_, p)| p.to_string()),
        dir: dir.to_string(),
    }
}

fn fast(targets: Vec<Target>) -> logship::Config {
    logship::Config {
        targets,
        batch_interval_ms: 100,
        timeout_ms: 1000,
        backoff_min_ms: 50,
        backoff_max_ms: 200,
        ..logship::Config::default()
    }
}

/// Waits until `dir` holds at least `n` log lines and returns them.
async fn wait_for_lines(dir: &Path, n: usize) -> Vec<String> {
    eventually(&format!("{n} log lines in {}", dir.display()), || async {
        let lines = log_lines(dir);
        (lines.len() >= n).then_some(lines)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deathstar_requests_reach_both_stores() {
    let secure_root = tempfile::tempdir().unwrap();
    let vuln_root = tempfile::tempdir().unwrap();
    let secure = start_store(secure_root.path(), secure_mode(&[("deathstar", "empire")])).await;
    let vuln = start_store(vuln_root.path(), Mode::Vulnerable).await;

    let ds = start_deathstar(Config {
        pod_name: "deathstar-abc".into(),
        log_ship: fast(vec![
            target(
                "ftp-secure",
                secure,
                Some(("deathstar", "empire")),
                "api-logs",
            ),
            target("ftp-vulnerable", vuln, None, ""),
        ]),
        ..Config::default()
    })
    .await;

    assert_eq!(
        raw_http(ds, "POST", "/v1/request-landing", "").await.status,
        200
    );
    assert_eq!(raw_http(ds, "GET", "/v1?full=1", "").await.status, 200);
    assert_eq!(raw_http(ds, "GET", "/v1/nothing", "").await.status, 404);

    // The secure store got them in the configured directory under the user's home.
    let secure_dir = secure_root.path().join("deathstar/api-logs");
    for dir in [secure_dir.as_path(), vuln_root.path()] {
        let lines = wait_for_lines(dir, 3).await;
        assert_eq!(lines.len(), 3, "{lines:?}");
        let fields: Vec<Vec<&str>> = lines.iter().map(|l| l.split(' ').collect()).collect();
        let summary: Vec<String> = fields
            .iter()
            .map(|f| format!("{} {} {}", f[2], f[3], f[4]))
            .collect();
        assert!(
            summary.contains(&"POST /v1/request-landing 200".to_string()),
            "{lines:?}"
        );
        assert!(
            summary.contains(&"GET /v1?full=1 200".to_string()),
            "{lines:?}"
        );
        assert!(
            summary.contains(&"GET /v1/nothing 404".to_string()),
            "{lines:?}"
        );
        for f in &fields {
            assert_eq!(f.len(), 6, "{f:?}");
            assert!(chrono_like(f[0]), "{f:?}");
            assert!(f[1].starts_with("127.0.0.1:"), "{f:?}");
            assert_eq!(f[5], "deathstar-abc");
        }
        for (name, _) in log_files(dir) {
            assert!(name.starts_with("deathstar-deathstar-abc-"), "{name}");
        }
    }
}

/// RFC 3339 UTC as the shipper writes it: 2026-11-21T21:00:00.123Z.
fn chrono_like(s: &str) -> bool {
    s.len() == 24 && s.as_bytes()[10] == b'T' && s.ends_with('Z')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_store_costs_drops_not_answers_and_not_the_other_store() {
    let good_root = tempfile::tempdir().unwrap();
    let good = start_store(good_root.path(), Mode::Vulnerable).await;
    // One store refuses connections, the other accepts them and never says a word.
    let refused = closed_port();
    let silent = loopback_listener().await;
    let silent_addr = silent.local_addr().unwrap();

    let mut cfg = fast(vec![
        target("good", good, None, ""),
        target("refused", refused, None, ""),
        target("silent", silent_addr, None, ""),
    ]);
    cfg.timeout_ms = 300;
    let ds = start_deathstar(Config {
        pod_name: "ds".into(),
        log_ship: cfg,
        ..Config::default()
    })
    .await;

    const REQUESTS: usize = 40;
    for _ in 0..REQUESTS {
        let r = raw_http(ds, "POST", "/v1/request-landing", "").await;
        assert_eq!((r.status, r.body.as_str()), (200, "Ship landed\n"));
    }
    // The good store gets everything while the others keep failing.
    let lines = wait_for_lines(good_root.path(), REQUESTS).await;
    assert_eq!(lines.len(), REQUESTS);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_and_failures_are_counted_per_target() {
    let good_root = tempfile::tempdir().unwrap();
    let good = start_store(good_root.path(), Mode::Vulnerable).await;
    let mut cfg = fast(vec![
        target("good", good, None, ""),
        target("down", closed_port(), None, ""),
    ]);
    cfg.buffer = 10;
    // One record per batch, so a worker holds at most one record outside its buffer.
    cfg.max_batch = 1;
    let shipper = LogShipper::start(cfg, "ds");
    let rec = ApiRecord::now(
        "10.244.0.7:41234".parse().unwrap(),
        "POST",
        "/v1/request-landing",
        200,
        "ds",
    );
    for _ in 0..100 {
        shipper.record(&rec);
    }
    let stats = shipper.stats().clone();
    let counts = eventually("the down target to fail twice", || async {
        let c = stats.snapshot();
        (c[1].batches_failed >= 2).then_some(c)
    })
    .await;
    let (good_c, down) = (&counts[0], &counts[1]);
    assert_eq!(good_c.name, "good");
    assert_eq!(down.name, "down");
    // Nothing was recorded twice or lost from the books.
    assert_eq!(good_c.queued + good_c.dropped, 100);
    assert_eq!(down.queued + down.dropped, 100);
    // The dead target's buffer (10) plus its one-record batch is all it could hold.
    assert!(down.dropped >= 100 - 11, "{down:?}");
    assert_eq!(down.shipped, 0);
    assert_eq!(down.batches_ok, 0);

    let good_c = eventually("the good target to ship what it queued", || async {
        let c = stats.snapshot()[0].clone();
        (c.shipped == c.queued && c.batches_ok > 0).then_some(c)
    })
    .await;
    assert_eq!(log_lines(good_root.path()).len() as u64, good_c.shipped);
    let line = stats.render();
    assert!(line.contains("good: queued="), "{line}");
    assert!(line.contains("down: queued="), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_comes_back_gets_the_held_batch() {
    let root = tempfile::tempdir().unwrap();
    // Reserve a port, start with nothing there, start the store on it later.
    let listener = loopback_listener().await;
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let shipper = LogShipper::start(fast(vec![target("late", addr, None, "")]), "ds");
    let rec = ApiRecord::now("127.0.0.1:9".parse().unwrap(), "GET", "/v1", 200, "ds");
    for _ in 0..3 {
        shipper.record(&rec);
    }
    let stats = shipper.stats().clone();
    eventually("a failed attempt", || async {
        (stats.snapshot()[0].batches_failed > 0).then_some(())
    })
    .await;

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (min, max) = crate::common::passive_ports("127.0.0.1");
    tokio::spawn(demo_services::ftpstore::serve(
        listener,
        demo_services::ftpstore::Config {
            listen: addr,
            root: root.path().to_path_buf(),
            name: "late".into(),
            passive_port_min: min,
            passive_port_max: max,
            mode: Mode::Vulnerable,
        },
    ));
    let lines = wait_for_lines(root.path(), 3).await;
    assert_eq!(lines.len(), 3);
    eventually("the batch to count as shipped", || async {
        (stats.snapshot()[0].shipped == 3).then_some(())
    })
    .await;
}
