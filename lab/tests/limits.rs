//! Connection limits: N connections in, the next one refused at once (a reset, not a timeout),
//! a freed slot usable at once, exact counts under churn and after clients die, and nothing
//! else affected.

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::harness::TestLab;

const LIMIT: &str = "apiVersion: lab.dev/v1\nkind: ConnectionLimit\nmetadata:\n  name: deathstar-landing\nspec:\n  endpointSelector:\n    matchLabels: {class: deathstar}\n  port: 80\n  maxConnections: 3\n  fromEndpoints:\n  - matchLabels: {org: alliance}\n";

fn ns(lab: &TestLab, pod: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(format!("{}-default-{pod}", lab.instance))
}

/// The Deathstar replica with this address (limits count per pod).
fn deathstar(lab: &TestLab) -> Ipv4Addr {
    lab.pod(&lab.replicas("deathstar")[0])["ip"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn connect(lab: &TestLab, pod: &str, ip: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    testkit::in_netns(&ns(lab, pod), move || {
        TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(3))
    })
    .unwrap()
}

fn counted(lab: &TestLab) -> u64 {
    let limits = lab.json(&["get", "limits", "-o", "json"]);
    limits
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["connections"].as_u64().unwrap())
        .sum()
}

fn wait_counted(lab: &TestLab, n: u64) {
    let ok = testkit::wait_for(Duration::from_secs(5), || (counted(lab) == n).then_some(()));
    assert!(
        ok.is_some(),
        "expected {n} counted connections, have {}",
        counted(lab)
    );
}

#[test]
fn the_limit_refuses_the_next_connection_at_once() {
    let lab = TestLab::up();
    lab.applied(LIMIT);
    let ds = deathstar(&lab);
    let mut held: Vec<TcpStream> = (0..3)
        .map(|i| connect(&lab, "xwing", ds, 80).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    wait_counted(&lab, 3);
    let refused =
        connect(&lab, "xwing", ds, 80).expect_err("the fourth connection must be refused");
    assert_eq!(
        refused.kind(),
        ErrorKind::ConnectionRefused,
        "a reset, not a timeout: {refused}"
    );
    let flow = testkit::wait_for(Duration::from_secs(5), || {
        lab.flows(&["--verdict", "DROPPED"])
            .into_iter()
            .find(|f| f["drop_reason_desc"] == "CONNECTION_LIMIT_EXCEEDED")
    })
    .expect("a refusal flow");
    assert!(
        flow["policy_explanation"]
            .as_str()
            .unwrap()
            .contains("deathstar-landing")
    );
    assert!(
        lab.ok(&["metrics"])
            .contains(r#"reason="Connection limit exceeded""#)
    );

    // Closing one frees a slot at once.
    drop(held.pop());
    wait_counted(&lab, 2);
    held.push(connect(&lab, "xwing", ds, 80).expect("a freed slot is usable"));
    wait_counted(&lab, 3);

    // Others are not limited: empire ships, and other ports.
    let tie = connect(&lab, "tiefighter", ds, 80);
    assert!(tie.is_ok(), "the tiefighter is not limited");
    let ftp: Ipv4Addr = lab.pod("ftp-vulnerable")["ip"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        connect(&lab, "xwing", ftp, 21).is_ok(),
        "other pods and ports are not limited"
    );
    assert_eq!(counted(&lab), 3, "only the limited connections are counted");
    drop(held);
    wait_counted(&lab, 0);
}

/// A process inside the xwing that opens `n` connections and holds them until killed.
fn holder(lab: &TestLab, ip: Ipv4Addr, n: usize) -> Child {
    let script = format!(
        "import socket,time\ns=[socket.create_connection(('{ip}',80)) for _ in range({n})]\nprint('ready',flush=True)\ntime.sleep(600)\n"
    );
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{}-default-xwing", lab.instance),
            "python3",
            "-c",
            &script,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

#[test]
fn counts_return_to_zero_when_clients_are_killed() {
    let lab = TestLab::up();
    lab.applied(LIMIT);
    let ds = deathstar(&lab);
    let mut child = holder(&lab, ds, 3);
    wait_counted(&lab, 3);
    assert_eq!(
        connect(&lab, "xwing", ds, 80).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    child.kill().unwrap();
    child.wait().unwrap();
    wait_counted(&lab, 0);
    // Churn: many short connections leave the count exact. Each close is counted when the
    // server's socket reaches CLOSE, which follows the client's close by the server's own
    // reaction time, so the loop waits for it rather than racing the server.
    for i in 0..20 {
        drop(connect(&lab, "xwing", ds, 80).unwrap_or_else(|e| panic!("connection {i}: {e}")));
        wait_counted(&lab, 0);
    }
}

#[test]
fn a_flood_keeps_ships_from_landing_until_a_limit_restores_service() {
    let lab = TestLab::up();
    let instance = lab.instance.clone();
    let flood = move || {
        let out = Command::new(crate::harness::LAB)
            .args([
                "--instance",
                &instance,
                "ship",
                "xwing",
                "flood",
                "200",
                "8",
                "-o",
                "json",
            ])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // Without a limit, the xwing's idle connections take every slot of both replicas.
    let f = flood.clone();
    let flooding = std::thread::spawn(f);
    std::thread::sleep(Duration::from_secs(2));
    let blocked = lab.ship("tiefighter", &["land", "--timeout", "2"]);
    assert_eq!(
        blocked["kind"], "timed_out",
        "the Deathstar is saturated: {blocked}"
    );
    let first = flooding.join().unwrap();
    assert_eq!(first["refused"], 0, "{first}");

    // With a limit on alliance ships, the flood is refused past it and the tiefighter lands.
    lab.applied(LIMIT);
    let flooding = std::thread::spawn(flood);
    std::thread::sleep(Duration::from_secs(2));
    let landed = lab.ship("tiefighter", &["land", "--timeout", "3"]);
    assert_eq!(
        landed["status"], 200,
        "the limit restores service: {landed}"
    );
    let second = flooding.join().unwrap();
    assert!(second["refused"].as_u64().unwrap() > 150, "{second}");
    assert!(second["connected"].as_u64().unwrap() <= 6, "{second}");
}

/// Connects from `pod` to `ip:port` with `n` threads released at the same instant; returns the
/// connections that were accepted (the others must have been refused, not timed out).
fn burst(lab: &TestLab, pod: &str, ip: Ipv4Addr, port: u16, n: usize) -> Vec<TcpStream> {
    testkit::in_netns(&ns(lab, pod), move || {
        // Threads inherit the network namespace of the thread that creates them.
        let start = std::sync::Arc::new(std::sync::Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(3))
                })
            })
            .collect();
        threads
            .into_iter()
            .filter_map(|t| match t.join().unwrap() {
                Ok(s) => Some(s),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
                    None
                }
            })
            .collect()
    })
    .unwrap()
}

#[test]
fn concurrent_connects_never_overshoot_the_limit() {
    let lab = TestLab::up();
    lab.applied(LIMIT);
    let ds = deathstar(&lab);
    for round in 0..10 {
        let mut held = burst(&lab, "xwing", ds, 80, 40);
        assert!(
            held.len() <= 3,
            "round {round}: {} of 40 simultaneous connects got in with a limit of 3",
            held.len()
        );
        // Racing SYNs may all be refused near the limit; the free slots are still there.
        while held.len() < 3 {
            held.push(connect(&lab, "xwing", ds, 80).expect("a free slot"));
        }
        assert_eq!(
            connect(&lab, "xwing", ds, 80).unwrap_err().kind(),
            ErrorKind::ConnectionRefused
        );
        wait_counted(&lab, 3);
        drop(held);
        wait_counted(&lab, 0);
    }
}

#[test]
fn a_handshake_ended_by_a_reset_gives_its_slot_back() {
    let lab = TestLab::up();
    // Nothing listens on port 81: every SYN gets the server's reset, after taking a slot.
    lab.applied(
        "apiVersion: lab.dev/v1\nkind: ConnectionLimit\nmetadata:\n  name: closed-port\nspec:\n  endpointSelector:\n    matchLabels: {class: deathstar}\n  port: 81\n  maxConnections: 1\n",
    );
    let ds = deathstar(&lab);
    for i in 0..5 {
        let err = connect(&lab, "xwing", ds, 81).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::ConnectionRefused,
            "attempt {i}: {err}"
        );
    }
    wait_counted(&lab, 0);
    // Each SYN reached the pod: none was refused by the limit, whose one slot a leaked
    // reservation would have kept.
    let refusals = lab
        .flows(&["--verdict", "DROPPED"])
        .into_iter()
        .filter(|f| f["drop_reason_desc"] == "CONNECTION_LIMIT_EXCEEDED")
        .count();
    assert_eq!(refusals, 0);
}

#[test]
fn limits_keep_counting_after_a_restart_takes_over() {
    let lab = TestLab::up();
    lab.applied(LIMIT);
    lab.kill_daemon();
    let out = lab.lab(&["up", "-d", "--web", "127.0.0.1:0"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("Taking over"),
        "{said}"
    );
    lab.wait_ready(Duration::from_secs(30));
    // The restarted lab's programs and the counter it left in the kernel share one count.
    let ds = deathstar(&lab);
    let held: Vec<TcpStream> = (0..3)
        .map(|i| connect(&lab, "xwing", ds, 80).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    wait_counted(&lab, 3);
    assert_eq!(
        connect(&lab, "xwing", ds, 80).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    drop(held);
    wait_counted(&lab, 0);
}
