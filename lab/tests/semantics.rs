//! One test per CiliumNetworkPolicy rule of semantics, each with real TCP/UDP/ICMP between pods
//! and the flow record that explains the outcome (see the playground manifest).

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpStream, UdpSocket},
    path::PathBuf,
    time::Duration,
};

use serde_json::Value;

use crate::harness::{TestLab, data};

fn playground() -> TestLab {
    TestLab::up_with(&[&data("manifests/playground.yaml")])
}

fn ip(lab: &TestLab, pod: &str) -> String {
    lab.pod(pod)["ip"].as_str().unwrap().to_owned()
}

/// Can `from` (NS/POD) fetch from the server's HTTP port by IP?
fn reaches(lab: &TestLab, from: &str, to: &str) -> bool {
    let url = format!("http://{}:8080/", ip(lab, to));
    lab.exec(from, &["curl", "-s", "-m", "1.5", &url]).1 == "hello from server\n"
}

/// Does one `ping` from `from` to `to` (by IP) get its answer within a second?
fn pings(lab: &TestLab, from: &str, to: &str) -> bool {
    let target = ip(lab, to);
    lab.exec(from, &["ping", "-c1", "-W1", &target]).0 == 0
}

fn last_flow(lab: &TestLab, pred: impl Fn(&Value) -> bool) -> Value {
    testkit::wait_for(Duration::from_secs(5), || {
        lab.flows(&[]).into_iter().rev().find(|f| pred(f))
    })
    .unwrap_or_else(|| panic!("no matching flow"))
}

fn dropped_to_server(lab: &TestLab, from_pod: &str) -> Value {
    last_flow(lab, |f| {
        f["verdict"] == "DROPPED" && f["source"]["pod_name"] == from_pod
    })
}

fn netns(lab: &TestLab, ns: &str, pod: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(format!("{}-{ns}-{pod}", lab.instance))
}

const SERVER: &str = "endpointSelector:\n    matchLabels:\n      role: server";

fn policy(name: &str, body: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: {name}\nspec:\n  {body}\n"
    )
}

#[test]
fn match_labels_and_expressions() {
    let lab = playground();
    assert!(
        reaches(&lab, "client-a", "server") && reaches(&lab, "client-b", "server"),
        "no policy: all allowed"
    );
    lab.applied(&policy(
            "red-only",
            &format!(
                "{SERVER}\n  ingress:\n  - fromEndpoints:\n    - matchExpressions:\n      - {{key: team, operator: In, values: [red]}}"
            ),
        ),
    );
    assert!(reaches(&lab, "client-a", "server"));
    assert!(!reaches(&lab, "client-b", "server"));
    let f = dropped_to_server(&lab, "client-b");
    assert_eq!(f["drop_reason_desc"], "POLICY_DENIED");
    assert!(
        f["policy_explanation"]
            .as_str()
            .unwrap()
            .contains("red-only")
    );
    // NotIn flips it; Exists / DoesNotExist select by key alone.
    lab.applied(&policy(
            "red-only",
            &format!(
                "{SERVER}\n  ingress:\n  - fromEndpoints:\n    - matchExpressions:\n      - {{key: team, operator: NotIn, values: [red]}}\n      - {{key: role, operator: Exists}}\n      - {{key: admin, operator: DoesNotExist}}"
            ),
        ),
    );
    assert!(!reaches(&lab, "client-a", "server"));
    assert!(reaches(&lab, "client-b", "server"));
}

#[test]
fn deny_rules_beat_allow_rules() {
    let lab = playground();
    lab.applied(&policy(
            "clients-but-blue",
            &format!(
                "{SERVER}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {{role: client}}\n  ingressDeny:\n  - fromEndpoints:\n    - matchLabels: {{team: blue}}\n    toPorts:\n    - ports:\n      - port: \"8000\"\n        endPort: 8100\n        protocol: TCP"
            ),
        ),
    );
    assert!(reaches(&lab, "client-a", "server"));
    assert!(!reaches(&lab, "client-b", "server"));
    let f = dropped_to_server(&lab, "client-b");
    assert_eq!(f["drop_reason"], 181);
    assert_eq!(f["drop_reason_desc"], "POLICY_DENY");
    assert_eq!(f["ingress_denied_by"][0]["name"], "clients-but-blue");
    assert!(
        f["ingress_denied_by"][0]["rule"]
            .as_str()
            .unwrap()
            .contains("ingressDeny[0]")
    );
}

#[test]
fn a_connection_needs_the_senders_egress_and_the_receivers_ingress() {
    let lab = playground();
    lab.applied(&policy(
        "server-from-a",
        &format!("{SERVER}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {{team: red}}"),
    ));
    assert!(reaches(&lab, "client-a", "server"));
    // client-a's own egress now only allows DNS: the server's ingress allow is not enough.
    lab.applied(&policy(
            "a-dns-only",
            "endpointSelector:\n    matchLabels: {team: red, role: client}\n  egress:\n  - toEndpoints:\n    - matchLabels: {\"k8s:io.kubernetes.pod.namespace\": kube-system, k8s-app: kube-dns}\n    toPorts:\n    - ports:\n      - {port: \"53\", protocol: ANY}",
        ),
    );
    assert!(!reaches(&lab, "client-a", "server"));
    let f = dropped_to_server(&lab, "client-a");
    assert_eq!(f["traffic_direction"], "EGRESS");
    assert!(
        f["policy_explanation"]
            .as_str()
            .unwrap()
            .contains("a-dns-only")
    );
    // DNS still works for it (the allowed egress).
    assert_eq!(
        lab.exec(
            "client-a",
            &["getent", "hosts", "server.default.svc.cluster.local"]
        )
        .0,
        0
    );
}

#[test]
fn replies_pass_although_the_server_is_in_egress_default_deny() {
    let lab = playground();
    lab.applied(&policy(
        "server-no-egress",
        &format!("{SERVER}\n  egress:\n  - toEndpoints:\n    - matchLabels: {{nothing: here}}"),
    ));
    assert!(
        reaches(&lab, "client-a", "server"),
        "the reply of an allowed connection is not new egress"
    );
    // But the server cannot open anything itself.
    let c = ip(&lab, "client-a");
    let (code, _) = lab.exec(
        "server",
        &["curl", "-s", "-m", "1", &format!("http://{c}:9/")],
    );
    assert_ne!(code, 0);
    let f = last_flow(&lab, |f| {
        f["verdict"] == "DROPPED" && f["source"]["pod_name"] == "server"
    });
    assert_eq!(f["traffic_direction"], "EGRESS");
}

#[test]
fn empty_peer_lists_select_nothing_and_ingress_of_empty_rule_denies_all() {
    let lab = playground();
    // `ingress: [{}]`: a rule with no peer: default deny with nothing allowed.
    lab.applied(&policy(
        "deny-all",
        &format!("{SERVER}\n  ingress:\n  - {{}}"),
    ));
    assert!(!reaches(&lab, "client-a", "server"));
    // An empty fromEndpoints list selects nothing either.
    lab.applied(&policy(
        "deny-all",
        &format!("{SERVER}\n  ingress:\n  - fromEndpoints: []"),
    ));
    assert!(!reaches(&lab, "client-a", "server"));
    // No peer field at all but ports: any peer on those ports.
    lab.applied(&policy(
        "deny-all",
        &format!("{SERVER}\n  ingress:\n  - toPorts:\n    - ports:\n      - port: \"8080\""),
    ));
    assert!(reaches(&lab, "client-a", "server") && reaches(&lab, "client-b", "server"));
    // `fromEndpoints: [{}]` is every pod of the policy's namespace, not other namespaces.
    lab.applied(&policy(
        "deny-all",
        &format!("{SERVER}\n  ingress:\n  - fromEndpoints:\n    - {{}}"),
    ));
    assert!(reaches(&lab, "client-a", "server"));
    assert!(!reaches(&lab, "other/client-c", "server"));
}

#[test]
fn namespaces_scope_policies_and_clusterwide_ones_do_not() {
    let lab = playground();
    lab.applied(&policy(
        "red",
        &format!("{SERVER}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {{team: red}}"),
    ));
    assert!(reaches(&lab, "client-a", "server"));
    assert!(
        !reaches(&lab, "other/client-c", "server"),
        "a namespaced policy only sees its namespace"
    );
    lab.applied(&policy(
            "red-anywhere",
            &format!(
                "{SERVER}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {{team: red, \"k8s:io.kubernetes.pod.namespace\": other}}"
            ),
        ),
    );
    assert!(reaches(&lab, "other/client-c", "server"));
    lab.ok(&["policy", "delete", "--all"]);
    lab.applied("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: red-cluster\nspec:\n  endpointSelector:\n    matchLabels:\n      role: server\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {team: red}\n",
    );
    assert!(reaches(&lab, "other/client-c", "server") && reaches(&lab, "client-a", "server"));
    assert!(!reaches(&lab, "client-b", "server"));
}

#[test]
fn ports_ranges_and_protocols() {
    let lab = playground();
    lab.applied(&policy(
            "range",
            &format!(
                "{SERVER}\n  ingress:\n  - toPorts:\n    - ports:\n      - {{port: \"8000\", endPort: 8100, protocol: TCP}}"
            ),
        ),
    );
    assert!(reaches(&lab, "client-a", "server"));
    lab.applied(&policy(
            "range",
            &format!(
                "{SERVER}\n  ingress:\n  - toPorts:\n    - ports:\n      - {{port: \"9000\", endPort: 9100, protocol: TCP}}"
            ),
        ),
    );
    assert!(!reaches(&lab, "client-a", "server"));
    lab.applied(&policy(
            "range",
            &format!(
                "{SERVER}\n  ingress:\n  - toPorts:\n    - ports:\n      - {{port: \"8080\", protocol: UDP}}"
            ),
        ),
    );
    assert!(
        !reaches(&lab, "client-a", "server"),
        "a UDP rule does not allow TCP"
    );
    // UDP egress: DNS over UDP allowed, then TCP only (the resolver's UDP query is dropped).
    let dns_policy = |proto: &str| {
        policy(
            "dns",
            &format!(
                "endpointSelector:\n    matchLabels: {{team: blue}}\n  egress:\n  - toEndpoints:\n    - matchLabels: {{\"k8s:io.kubernetes.pod.namespace\": kube-system}}\n    toPorts:\n    - ports:\n      - {{port: \"53\", protocol: {proto}}}"
            ),
        )
    };
    lab.applied(&dns_policy("UDP"));
    assert_eq!(
        lab.exec(
            "client-b",
            &["getent", "hosts", "server.default.svc.cluster.local"]
        )
        .0,
        0
    );
    lab.applied(&dns_policy("TCP"));
    assert_ne!(
        lab.exec(
            "client-b",
            &[
                "timeout",
                "4",
                "getent",
                "hosts",
                "server.default.svc.cluster.local"
            ]
        )
        .0,
        0
    );
    let f = last_flow(&lab, |f| {
        f["verdict"] == "DROPPED"
            && f["source"]["pod_name"] == "client-b"
            && f["l4"]["UDP"].is_object()
    });
    assert_eq!(f["l4"]["UDP"]["destination_port"], 53);
}

#[test]
fn entities_host_and_cluster() {
    let lab = playground();
    let node = PathBuf::from("/run/netns").join(format!("{}-node", lab.instance));
    let server_ip: Ipv4Addr = ip(&lab, "server").parse().unwrap();
    let from_node = || {
        testkit::in_netns(&node, move || {
            TcpStream::connect_timeout(&(server_ip, 8080).into(), Duration::from_millis(1500))
                .is_ok()
        })
        .unwrap()
    };
    lab.applied(&policy(
        "host-only",
        &format!("{SERVER}\n  ingress:\n  - fromEntities: [host]"),
    ));
    assert!(from_node(), "the node (host entity) is allowed");
    assert!(!reaches(&lab, "client-a", "server"));
    lab.applied(&policy(
        "host-only",
        &format!("{SERVER}\n  ingress:\n  - fromEntities: [cluster]"),
    ));
    assert!(
        from_node()
            && reaches(&lab, "client-a", "server")
            && reaches(&lab, "other/client-c", "server")
    );
    lab.applied(&policy(
        "host-only",
        &format!("{SERVER}\n  ingress:\n  - fromEntities: [world]"),
    ));
    assert!(
        !from_node() && !reaches(&lab, "client-a", "server"),
        "world is outside the cluster"
    );
}

#[test]
fn icmp_errors_of_allowed_connections_pass() {
    let lab = playground();
    // client-a accepts nothing, but sends UDP to a closed port on the server: the server's
    // "port unreachable" is related to that flow and must reach client-a.
    lab.applied(&policy(
        "a-closed",
        "endpointSelector:\n    matchLabels: {team: red, role: client}\n  ingress:\n  - {}",
    ));
    let server_ip: Ipv4Addr = ip(&lab, "server").parse().unwrap();
    let refused = testkit::in_netns(&netns(&lab, "default", "client-a"), move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.connect((server_ip, 9999)).unwrap();
        s.send(b"anyone?").unwrap();
        let mut buf = [0u8; 16];
        matches!(s.recv(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    })
    .unwrap();
    assert!(refused, "the ICMP port unreachable must arrive");
}

#[test]
fn policy_changes_keep_allowed_established_connections() {
    let lab = playground();
    lab.applied(&policy(
        "red",
        &format!("{SERVER}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {{team: red}}"),
    ));
    let server_ip: Ipv4Addr = ip(&lab, "server").parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<&'static str>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Vec<bool>>();
    let ns = netns(&lab, "default", "client-a");
    let t = std::thread::spawn(move || {
        testkit::in_netns(&ns, move || {
            let mut s =
                TcpStream::connect_timeout(&(server_ip, 8080).into(), Duration::from_secs(2))
                    .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut results = Vec::new();
            while let Ok(step) = rx.recv() {
                if step == "stop" {
                    break;
                }
                let ok = s.write_all(b"GET / HTTP/1.1\r\nHost: s\r\n\r\n").is_ok() && {
                    let mut buf = [0u8; 256];
                    s.read(&mut buf).is_ok_and(|n| {
                        String::from_utf8_lossy(&buf[..n]).contains("hello from server")
                    })
                };
                results.push(ok);
            }
            done_tx.send(results).unwrap();
        })
        .unwrap();
    });
    tx.send("request").unwrap();
    // Unrelated and widening changes: endpoints and identities come and go in the maps.
    lab.applied(&policy(
        "other",
        "endpointSelector:\n    matchLabels: {team: blue}\n  egress:\n  - toEntities: [cluster]",
    ));
    tx.send("request").unwrap();
    lab.applied(&policy(
        "red",
        &format!("{SERVER}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {{role: client}}"),
    ));
    tx.send("request").unwrap();
    tx.send("stop").unwrap();
    let results = done_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    t.join().unwrap();
    assert_eq!(results, vec![true, true, true]);
}

#[test]
fn icmp_types_combine_with_peers_and_deny_wins() {
    let lab = playground();
    assert!(
        pings(&lab, "client-a", "server") && pings(&lab, "client-b", "server"),
        "no policy: ping works"
    );
    // The server takes echo requests (by name) from the red team only: the ICMP type is the
    // rule's only "port", so TCP is not allowed by it either.
    lab.applied(&policy(
        "ping-red",
        &format!(
            "{SERVER}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {{team: red}}\n    icmps:\n    - fields:\n      - type: EchoRequest"
        ),
    ));
    assert!(pings(&lab, "client-a", "server"));
    assert!(!pings(&lab, "client-b", "server"));
    assert!(
        !reaches(&lab, "client-a", "server"),
        "only ICMP type 8 is allowed"
    );
    let f = last_flow(&lab, |f| {
        f["verdict"] == "DROPPED"
            && f["source"]["pod_name"] == "client-b"
            && f["l4"]["ICMPv4"].is_object()
    });
    assert_eq!(f["l4"]["ICMPv4"]["type"], 8, "{f}");
    assert_eq!(f["l4"]["ICMPv4"]["code"], 0, "{f}");
    assert_eq!(f["Summary"], "ICMPv4 EchoRequest");
    assert_eq!(f["drop_reason_desc"], "POLICY_DENIED");
    let why = f["policy_explanation"].as_str().unwrap();
    assert!(
        why.contains("ping-red") && why.contains("ICMP EchoRequest (type 8)"),
        "{why}"
    );
    // A pinger whose own ingress is closed still gets its echo replies: they belong to the
    // request it sent (connection tracking), as in Cilium.
    lab.applied(&policy(
        "a-closed",
        "endpointSelector:\n    matchLabels: {team: red, role: client}\n  ingress:\n  - {}",
    ));
    assert!(pings(&lab, "client-a", "server"), "echo replies pass");
    // Deny beats allow: every client is allowed at L3, but blue's echo requests are denied.
    lab.applied(&policy(
        "ping-red",
        &format!(
            "{SERVER}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {{role: client}}\n  ingressDeny:\n  - fromEndpoints:\n    - matchLabels: {{team: blue}}\n    icmps:\n    - fields:\n      - type: 8"
        ),
    ));
    assert!(pings(&lab, "client-a", "server"));
    assert!(
        reaches(&lab, "client-b", "server"),
        "blue's TCP stays allowed"
    );
    assert!(!pings(&lab, "client-b", "server"));
    let f = last_flow(&lab, |f| {
        f["verdict"] == "DROPPED"
            && f["source"]["pod_name"] == "client-b"
            && f["drop_reason"] == 181
    });
    assert_eq!(f["l4"]["ICMPv4"]["type"], 8, "{f}");
    assert_eq!(f["ingress_denied_by"][0]["name"], "ping-red");
    assert!(
        f["ingress_denied_by"][0]["rule"]
            .as_str()
            .unwrap()
            .contains("ingressDeny[0]"),
        "{f}"
    );
}

#[test]
fn icmp_egress_rules_by_number() {
    let lab = playground();
    // client-b may send echo requests (type 8) and nothing else: the DNS-free ping by IP works,
    // curl does not; the reply comes back through connection tracking.
    lab.applied(&policy(
        "b-pings",
        "endpointSelector:\n    matchLabels: {team: blue}\n  egress:\n  - icmps:\n    - fields:\n      - type: 8\n        family: IPv4\n      - type: 128\n        family: IPv6",
    ));
    assert!(pings(&lab, "client-b", "server"));
    assert!(!reaches(&lab, "client-b", "server"));
    let f = last_flow(&lab, |f| {
        f["verdict"] == "DROPPED" && f["source"]["pod_name"] == "client-b"
    });
    assert_eq!(f["traffic_direction"], "EGRESS", "{f}");
}

/// A raw IPv4 socket of IP protocol `proto` (no ports: GRE, VRRP, ...).
fn raw_socket(proto: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, proto) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// Sends one packet of IP protocol `proto` from pod `from` to pod `to` (both in `default`),
/// and tells whether it arrives there within a second.
fn raw_ip_arrives(lab: &TestLab, from: &str, to: &str, proto: i32) -> bool {
    use std::os::fd::AsRawFd;
    const MARK: &[u8] = b"lab-raw-ip-test";
    let dst: Ipv4Addr = ip(lab, to).parse().unwrap();
    // A socket keeps the namespace it was made in.
    let rx = testkit::in_netns(&netns(lab, "default", to), || raw_socket(proto)).unwrap();
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a timeval of the right size.
    let rc = unsafe {
        libc::setsockopt(
            rx.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    testkit::in_netns(&netns(lab, "default", from), move || {
        let tx = raw_socket(proto);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sendto with a buffer and a sockaddr_in of the right sizes.
        let sent = unsafe {
            libc::sendto(
                tx.as_raw_fd(),
                MARK.as_ptr().cast(),
                MARK.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(
            sent,
            MARK.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    })
    .unwrap();
    let mut buf = [0u8; 256];
    loop {
        // SAFETY: recv into a buffer of the given length.
        let n = unsafe { libc::recv(rx.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return false; // the timeout: nothing (more) arrived
        }
        // The raw socket sees the IP header too; the payload follows it.
        if buf[..n as usize].windows(MARK.len()).any(|w| w == MARK) {
            return true;
        }
    }
}

#[test]
fn protocols_without_ports() {
    const VRRP: i32 = 112;
    let lab = playground();
    assert!(
        raw_ip_arrives(&lab, "client-b", "server", VRRP),
        "no policy: VRRP passes"
    );
    // The server accepts VRRP (written without a port) from the red team, and nothing else.
    lab.applied(&policy(
        "vrrp-red",
        &format!(
            "{SERVER}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {{team: red}}\n    toPorts:\n    - ports:\n      - protocol: VRRP"
        ),
    ));
    assert!(raw_ip_arrives(&lab, "client-a", "server", VRRP));
    assert!(!raw_ip_arrives(&lab, "client-b", "server", VRRP));
    assert!(!reaches(&lab, "client-a", "server"), "VRRP only, not TCP");
    let f = last_flow(&lab, |f| {
        f["verdict"] == "DROPPED" && f["source"]["pod_name"] == "client-b"
    });
    assert_eq!(f["Summary"], "IP protocol 112", "{f}");
    assert_eq!(f["drop_reason_desc"], "POLICY_DENIED");
}
