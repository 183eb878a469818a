//! L7 HTTP policy through the transparent proxy: the guide's and the paper's outcomes, the
//! server never seeing a denied request, framing attacks refused in the real datapath, and a
//! stopped proxy keeping the port closed.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpStream},
    path::Path,
    time::Duration,
};

use serde_json::Value;

use crate::harness::TestLab;

const SW_L3_L4_L7: &str = r#"
apiVersion: "cilium.io/v2"
kind: CiliumNetworkPolicy
metadata:
  name: "rule1"
spec:
  description: "L7 policy to restrict access to specific HTTP call"
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
      rules:
        http:
        - method: "POST"
          path: "/v1/request-landing"
"#;

const PAPER_ALLOW_LIST: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: deathstar-api-allow-list
spec:
  endpointSelector:
    matchLabels:
      class: deathstar
  ingress:
  - toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      rules:
        http:
        - method: POST
          path: /v1/request-landing
        - method: GET
          path: /v1
"#;

fn total_restarts(lab: &TestLab) -> u64 {
    lab.replicas("deathstar")
        .iter()
        .map(|r| lab.pod(r)["restarts"].as_u64().unwrap())
        .sum()
}

#[test]
fn the_guides_l7_outcomes() {
    let lab = TestLab::up();
    lab.applied(SW_L3_L4_L7);
    assert_eq!(lab.ship("tiefighter", &["land"])["status"], 200);
    let (code, out) = lab.exec(
        "tiefighter",
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "-i",
            "-XPUT",
            "deathstar.default.svc.cluster.local/v1/exhaust-port",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(
        out.to_lowercase().contains("content-type: text/plain"),
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\nAccess denied\r\n"), "{out:?}");
    assert_eq!(
        lab.ship("xwing", &["land", "--timeout", "2"])["kind"],
        "timed_out"
    );
    // The Deathstar was never hit: no replica exploded.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(total_restarts(&lab), 0);

    let denied = testkit::wait_for(Duration::from_secs(5), || {
        lab.flows(&["--type", "L7", "--verdict", "DROPPED"])
            .into_iter()
            .find(|f| f["l7"]["http"]["method"] == "PUT")
    })
    .expect("an L7 flow for the denied PUT");
    assert_eq!(denied["l7"]["http"]["code"], 403);
    assert!(
        denied["l7"]["http"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/v1/exhaust-port")
    );
    assert!(
        denied["policy_explanation"]
            .as_str()
            .unwrap()
            .contains("rule1"),
        "{denied}"
    );
    let metrics = lab.ok(&["metrics"]);
    assert!(
        metrics.contains("cilium_policy_l7_total{rule=\"denied\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_papers_allow_list_and_the_servers_own_log() {
    let lab = TestLab::up();
    lab.applied(PAPER_ALLOW_LIST);
    for ship in ["tiefighter", "xwing"] {
        assert_eq!(lab.ship(ship, &["survey"])["status"], 200, "{ship}");
        assert_eq!(lab.ship(ship, &["land"])["status"], 200, "{ship}");
        let fire = lab.ship(ship, &["fire"]);
        assert_eq!(
            (fire["status"].as_u64(), fire["body"].as_str()),
            (Some(403), Some("Access denied\r\n")),
            "{fire}"
        );
        let cargo = lab.ship(ship, &["http", "PUT", "/v1/cargobay"]);
        assert_eq!(cargo["status"], 403, "{cargo}");
        // Anchored: a path that only starts like an allowed one is denied.
        assert_eq!(
            lab.ship(ship, &["http", "GET", "/v1/healthz"])["status"],
            403
        );
    }
    // The Deathstar's own API log (shipped to the secure store) has the allowed requests and
    // none of the denied ones.
    let log = testkit::wait_for(Duration::from_secs(15), || {
        let out = lab.secure_store_logs();
        let c = out["content"].as_str().unwrap_or_default().to_owned();
        (c.matches("POST /v1/request-landing").count() >= 2).then_some(c)
    })
    .expect("the deathstar's log");
    assert!(
        !log.contains("exhaust-port") && !log.contains("cargobay") && !log.contains("healthz"),
        "{log}"
    );
    assert_eq!(total_restarts(&lab), 0);
}

/// Sends raw bytes from inside a pod to `ip:port` and returns what comes back.
fn raw(lab: &TestLab, pod: &str, ip: Ipv4Addr, port: u16, bytes: &'static [u8]) -> String {
    let ns = Path::new("/run/netns").join(format!("{}-default-{pod}", lab.instance));
    testkit::in_netns(&ns, move || {
        let mut s = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(3))
            .expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .unwrap()
}

#[test]
fn framing_attacks_are_refused_in_the_datapath() {
    let lab = TestLab::up();
    lab.applied(PAPER_ALLOW_LIST);
    let ds: Ipv4Addr = lab.pod(&lab.replicas("deathstar")[0])["ip"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // An allowed request first, so we know the path works.
    let ok = raw(
        &lab,
        "xwing",
        ds,
        80,
        b"GET /v1 HTTP/1.1\r\nHost: deathstar\r\nConnection: close\r\n\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let attacks: [&'static [u8]; 4] = [
        // CL.TE smuggling: a second request hidden in the body.
        b"POST /v1/request-landing HTTP/1.1\r\nHost: d\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPUT /v1/exhaust-port HTTP/1.1\r\nHost: d\r\n\r\n",
        b"POST /v1/request-landing HTTP/1.1\r\nHost: d\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"GET /v1 HTTP/1.1\r\nHost: d\r\nX: a\r\n folded\r\n\r\n",
        b"GET http://deathstar/v1/exhaust-port HTTP/1.1\r\nHost: d\r\n\r\n",
    ];
    for a in attacks {
        let out = raw(&lab, "xwing", ds, 80, a);
        assert!(
            out.starts_with("HTTP/1.1 400"),
            "{:?} → {out}",
            String::from_utf8_lossy(a)
        );
    }
    // Dot segments are refused rather than normalised differently from the server.
    let out = raw(
        &lab,
        "xwing",
        ds,
        80,
        b"PUT /v1/../v1/exhaust-port HTTP/1.1\r\nHost: d\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        total_restarts(&lab),
        0,
        "a smuggled exhaust-port request reached the Deathstar"
    );
    let metrics = lab.ok(&["metrics"]);
    assert!(
        metrics.contains("cilium_policy_l7_total{rule=\"parse_errors\"} 5"),
        "{metrics}"
    );
}

#[test]
fn a_stopped_proxy_keeps_the_port_closed() {
    let lab = TestLab::up();
    lab.applied(PAPER_ALLOW_LIST);
    let stop: Value = lab.json(&["debug-api", "POST", "/api/x/proxy/stop"]);
    assert_eq!(stop["proxy"], "stopped");
    let fire = lab.ship("xwing", &["fire", "--timeout", "2"]);
    assert_ne!(fire["kind"], "ok", "{fire}");
    assert_ne!(
        fire["status"], 503,
        "the request must not reach the Deathstar: {fire}"
    );
    let drops = lab.flows(&["--verdict", "DROPPED"]);
    assert!(
        drops
            .iter()
            .any(|f| f["drop_reason_desc"] == "PROXY_UNAVAILABLE"),
        "{drops:#?}"
    );
    lab.json(&["debug-api", "POST", "/api/x/proxy/start"]);
    assert_eq!(lab.ship("xwing", &["fire"])["status"], 403);
    assert_eq!(lab.ship("xwing", &["land"])["status"], 200);
    assert_eq!(total_restarts(&lab), 0);
}

#[test]
fn ports_without_l7_rules_never_touch_the_proxy() {
    let lab = TestLab::up();
    lab.applied(PAPER_ALLOW_LIST);
    let before = lab.ok(&["metrics"]);
    let received = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("cilium_policy_l7_total{rule=\"received\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    // FTP on port 21 to the stores is not under any L7 rule.
    let out = lab.ship("xwing", &["fetch-logs", "ftp-vulnerable"]);
    assert_eq!(out["kind"], "ftp_ok", "{out}");
    assert_eq!(received(&before), received(&lab.ok(&["metrics"])));
}

/// HTTP rules on a port range (`endPort` with `rules.http`): every port of the range goes
/// through the proxy and is judged by the range's rules; the server's echo workload answers on
/// 8080, and a second server the test opens in the same pod on 8090.
const RANGE_POLICY: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: server-get-on-a-range
spec:
  endpointSelector:
    matchLabels:
      role: server
  ingress:
  - fromEndpoints:
    - matchLabels:
        role: client
    toPorts:
    - ports:
      - port: "8000"
        endPort: 8100
        protocol: TCP
      rules:
        http:
        - method: GET
          path: "/.*"
"#;

/// A minimal HTTP server on `port` inside the network namespace at `ns`, answering `body`
/// to every request until the test ends.
fn http_server_in(ns: &Path, port: u16, body: &'static str) {
    let listener = testkit::in_netns(ns, move || std::net::TcpListener::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

#[test]
fn http_rules_on_a_port_range_apply_to_every_port_of_it() {
    let lab = TestLab::up_with(&[&crate::harness::data("manifests/playground.yaml")]);
    let server = lab.pod("server")["ip"].as_str().unwrap().to_owned();
    let ns =
        std::path::PathBuf::from("/run/netns").join(format!("{}-default-server", lab.instance));
    http_server_in(&ns, 8090, "second port\n");
    lab.applied(RANGE_POLICY);
    let request = |method: &str, port: u16| {
        let url = format!("http://{server}:{port}/hello");
        let (code, out) = lab.exec(
            "client-a",
            &["curl", "-s", "-m", "3", "-i", "-X", method, &url],
        );
        assert_eq!(code, 0, "{method} on {port}: curl failed");
        out
    };
    for (port, body) in [(8080, "hello from server\n"), (8090, "second port\n")] {
        let got = request("GET", port);
        assert!(
            got.starts_with("HTTP/1.1 200") && got.ends_with(body),
            "GET on {port}: {got}"
        );
        let refused = request("POST", port);
        assert!(
            refused.starts_with("HTTP/1.1 403"),
            "POST on {port}: {refused}"
        );
        assert!(refused.ends_with("Access denied\r\n"), "{refused:?}");
    }
    let denied = testkit::wait_for(Duration::from_secs(5), || {
        lab.flows(&["--type", "L7", "--verdict", "DROPPED"])
            .into_iter()
            .find(|f| {
                f["l7"]["http"]["method"] == "POST"
                    && f["l7"]["http"]["url"]
                        .as_str()
                        .is_some_and(|u| u.contains(":8090/"))
            })
    })
    .expect("an L7 flow for the POST on 8090");
    assert_eq!(denied["l7"]["http"]["code"], 403);
    assert!(
        denied["policy_explanation"]
            .as_str()
            .unwrap_or_default()
            .contains("server-get-on-a-range"),
        "{denied}"
    );
    let allowed = testkit::wait_for(Duration::from_secs(5), || {
        lab.flows(&["--type", "L7", "--verdict", "FORWARDED"])
            .into_iter()
            .find(|f| f["l7"]["http"]["method"] == "GET")
    })
    .expect("an L7 flow for a GET");
    assert!(
        allowed["policy_explanation"]
            .as_str()
            .unwrap_or_default()
            .contains("server-get-on-a-range"),
        "{allowed}"
    );
}
