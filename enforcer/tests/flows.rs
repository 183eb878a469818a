//! The Hubble-shaped JSON of flows, byte for byte: flows built from datapath events and proxy
//! records of every kind are serialised as the lab serves them (`/api/flows`, the SSE stream,
//! `lab observe -o json`) and compared with `tests/data/flows/hubble.jsonl`. Users and scripts
//! read this JSON, so a change in it must be deliberate: `UPDATE_EXPECT=1 cargo test -p enforcer
//! --test flows` rewrites the file, and the diff shows what changed.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    sync::Arc,
    time::{Duration, SystemTime},
};

use enforcer::{
    datapath::{Clock, Event},
    engine::{Endpoint, Names, RuleInfo},
    flow::{Flow, from_event, from_l7},
    policy::resolve::{Direction, MapKey},
    proxy::{CompiledRules, ConnMeta, L7Kind, L7Record, L7Verdict},
};
use enforcer_common::*;

const DEATHSTAR: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 2);
const XWING: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 4);
const TIEFIGHTER: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 5);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 66);

fn endpoint(ep_id: u32, pod: &str, ip: Ipv4Addr, identity: u32) -> Endpoint {
    Endpoint {
        ep_id,
        namespace: "default".into(),
        pod: pod.into(),
        ip,
        ifname: format!("lxc{ep_id}"),
        ifindex: 10 + ep_id,
        identity,
        labels: BTreeMap::new(),
        flags: 0,
        named_ports: Default::default(),
    }
}

fn rule(policy: &str, section: &str, rule_index: usize, line: usize, audit: bool) -> RuleInfo {
    RuleInfo {
        policy: policy.into(),
        namespace: Some("default".into()),
        kind: "CiliumNetworkPolicy".into(),
        section: section.into(),
        spec_index: 0,
        rule_index,
        source: format!("sw_l3_l4_policy.yaml:{line}"),
        audit,
    }
}

fn names() -> Names {
    let mut names = Names::default();
    for ep in [
        endpoint(1, "deathstar-6fb5694d48-5hmds", DEATHSTAR, 256),
        endpoint(2, "xwing", XWING, 257),
        endpoint(3, "tiefighter", TIEFIGHTER, 258),
    ] {
        names.endpoints_by_ip.insert(ep.ip, ep.ep_id);
        names.endpoints_by_id.insert(ep.ep_id, ep);
    }
    let labels = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    names
        .identities
        .insert(256, labels(&["k8s:class=deathstar", "k8s:org=empire"]));
    names
        .identities
        .insert(257, labels(&["k8s:class=xwing", "k8s:org=alliance"]));
    names
        .identities
        .insert(258, labels(&["k8s:class=tiefighter", "k8s:org=empire"]));
    names
        .identities
        .insert(IDENTITY_WORLD, labels(&["reserved:world"]));
    names
        .identities
        .insert(IDENTITY_HOST, labels(&["reserved:host"]));
    names.rules = vec![
        rule("unused", "ingress", 0, 1, false),
        rule("rule1", "ingress", 0, 12, false),
        rule("deny-xwing", "ingressDeny", 0, 9, false),
        rule("inventory-health-checks", "ingress", 1, 20, true),
        rule("deathstar-limit", "limits", 0, 5, false),
    ];
    names.enforcers.insert((1, DIR_INGRESS), vec![1, 2]);
    names.enforcers.insert((2, DIR_EGRESS), vec![3]);
    names.node_ips = vec![Ipv4Addr::new(10, 244, 0, 1)];
    let l7_key = MapKey::exact(1, 258, Direction::Ingress, 6, 80);
    names.l7.insert(
        l7_key,
        Arc::new(CompiledRules::compile(&[]).expect("no rules")),
    );
    names
}

#[allow(clippy::too_many_arguments)]
fn event(
    (saddr, sport): (Ipv4Addr, u16),
    (daddr, dport): (Ipv4Addr, u16),
    proto: u8,
    tcp_flags: u8,
    (ep_id, direction): (u32, u8),
    (verdict, drop_reason): (u8, u8),
    (rule_ref, audit_rule_ref): (u32, u32),
    (obs_point, ct_flags): (u8, u32),
) -> FlowEvent {
    let identity = |ip: Ipv4Addr| match ip {
        DEATHSTAR => 256,
        XWING => 257,
        TIEFIGHTER => 258,
        _ => IDENTITY_WORLD,
    };
    FlowEvent {
        ts_ns: 5_000_000_123,
        saddr: u32::from(saddr).to_be(),
        daddr: u32::from(daddr).to_be(),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        tcp_flags,
        direction,
        verdict,
        drop_reason,
        is_reply: 0,
        obs_point,
        _pad: 0,
        ep_id,
        src_identity: identity(saddr),
        dst_identity: identity(daddr),
        rule_ref,
        ifindex: 11,
        len: 60,
        ct_flags,
        audit_rule_ref,
        icmp_type: 0,
        icmp_code: 0,
        _pad2: 0,
    }
}

fn events() -> Vec<FlowEvent> {
    let ds = (DEATHSTAR, 80);
    let tie = (TIEFIGHTER, 41234);
    let xw = (XWING, 40000);
    let syn = 2;
    vec![
        // Allowed by a rule, at the receiver.
        event(
            tie,
            ds,
            6,
            syn,
            (1, DIR_INGRESS),
            (FLOW_FORWARDED, DROP_NONE),
            (1, 0),
            (OBS_TO_POD, 0),
        ),
        // Default deny at the receiver, named policies.
        event(
            xw,
            ds,
            6,
            syn,
            (1, DIR_INGRESS),
            (FLOW_DROPPED, DROP_POLICY_DENIED),
            (0, 0),
            (OBS_TO_POD, 0),
        ),
        // Default deny with no enforcing policy known (egress of the tiefighter).
        event(
            tie,
            (XWING, 53),
            17,
            0,
            (3, DIR_EGRESS),
            (FLOW_DROPPED, DROP_POLICY_DENIED),
            (0, 0),
            (OBS_FROM_POD, 0),
        ),
        // Explicit deny rule.
        event(
            xw,
            ds,
            6,
            syn | 16,
            (1, DIR_INGRESS),
            (FLOW_DROPPED, DROP_POLICY_DENY),
            (2, 0),
            (OBS_TO_POD, 0),
        ),
        // Audit: would be dropped by default deny; and by an audit rule.
        event(
            xw,
            ds,
            6,
            syn,
            (1, DIR_INGRESS),
            (FLOW_AUDIT, DROP_POLICY_DENIED),
            (0, 0),
            (OBS_TO_POD, CT_AUDIT),
        ),
        event(
            xw,
            ds,
            6,
            syn,
            (1, DIR_INGRESS),
            (FLOW_AUDIT, DROP_POLICY_DENY),
            (3, 0),
            (OBS_TO_POD, CT_AUDIT),
        ),
        // Forwarded with an audit-mode policy that would allow it.
        event(
            tie,
            ds,
            6,
            syn,
            (1, DIR_INGRESS),
            (FLOW_FORWARDED, DROP_NONE),
            (1, 3),
            (OBS_TO_POD, 0),
        ),
        // No policy selects the endpoint.
        event(
            xw,
            (TIEFIGHTER, 8080),
            6,
            1 | 16,
            (2, DIR_EGRESS),
            (FLOW_FORWARDED, DROP_NONE),
            (0, 0),
            (OBS_FROM_POD, 0),
        ),
        // Redirected to the L7 proxy.
        event(
            tie,
            ds,
            6,
            syn,
            (1, DIR_INGRESS),
            (FLOW_REDIRECTED, DROP_NONE),
            (1, 0),
            (OBS_TO_POD, CT_PROXY_REDIRECT),
        ),
        // Connection limit.
        event(
            xw,
            ds,
            6,
            syn,
            (1, DIR_INGRESS),
            (FLOW_DROPPED, DROP_CONN_LIMIT),
            (4, 0),
            (OBS_TO_POD, 0),
        ),
        // Other drop reasons, ICMP and another protocol.
        FlowEvent {
            icmp_type: 8,
            ..event(
                xw,
                ds,
                1,
                0,
                (1, DIR_INGRESS),
                (FLOW_DROPPED, DROP_INVALID_PACKET),
                (0, 0),
                (OBS_TO_POD, 0),
            )
        },
        // An echo request (ICMP type 8) dropped by default deny, and a port unreachable (3/3).
        FlowEvent {
            icmp_type: 8,
            ..event(
                (XWING, 0x1234),
                (DEATHSTAR, 0),
                1,
                0,
                (1, DIR_INGRESS),
                (FLOW_DROPPED, DROP_POLICY_DENIED),
                (0, 0),
                (OBS_TO_POD, 0),
            )
        },
        FlowEvent {
            icmp_type: 3,
            icmp_code: 3,
            ..event(
                (DEATHSTAR, 0),
                (XWING, 0),
                1,
                0,
                (2, DIR_INGRESS),
                (FLOW_DROPPED, DROP_POLICY_DENIED),
                (0, 0),
                (OBS_TO_POD, 0),
            )
        },
        event(
            xw,
            ds,
            47,
            0,
            (1, DIR_INGRESS),
            (FLOW_ERROR, DROP_UNSUPPORTED_L3),
            (0, 0),
            (OBS_TO_POD, 0),
        ),
        // From outside: prefilter, NodePort in, NodePort dropped, bypass, to the world.
        event(
            (ATTACKER, 51000),
            (Ipv4Addr::new(203, 0, 113, 10), 30007),
            6,
            syn,
            (0, DIR_INGRESS),
            (FLOW_DROPPED, DROP_PREFILTER),
            (0, 0),
            (OBS_XDP, 0),
        ),
        event(
            (ATTACKER, 51000),
            (Ipv4Addr::new(203, 0, 113, 10), 30007),
            6,
            syn,
            (0, DIR_INGRESS),
            (FLOW_FORWARDED, DROP_NONE),
            (0, 0),
            (OBS_FROM_WORLD, CT_NODEPORT),
        ),
        event(
            (ATTACKER, 51000),
            (Ipv4Addr::new(203, 0, 113, 10), 30007),
            6,
            syn,
            (0, DIR_INGRESS),
            (FLOW_DROPPED, DROP_NO_SERVICE_BACKEND),
            (0, 0),
            (OBS_FROM_WORLD, 0),
        ),
        event(
            (ATTACKER, 51000),
            ds,
            6,
            syn,
            (1, DIR_INGRESS),
            (FLOW_FORWARDED, DROP_NONE),
            (0, 0),
            (OBS_TO_POD, CT_BYPASS | CT_NODEPORT),
        ),
        event(
            ds,
            (ATTACKER, 51000),
            6,
            syn | 16,
            (0, DIR_EGRESS),
            (FLOW_FORWARDED, DROP_NONE),
            (0, 0),
            (OBS_TO_WORLD, 0),
        ),
        // From the node (host identity) and an unknown verdict/point.
        event(
            (Ipv4Addr::new(10, 244, 0, 1), 5000),
            ds,
            6,
            4,
            (1, DIR_INGRESS),
            (9, 0),
            (0, 0),
            (9, 0),
        ),
    ]
}

fn record(
    kind: L7Kind,
    verdict: L7Verdict,
    (method, url, host): (&str, &str, Option<&str>),
    status: Option<u16>,
    rule: Option<u32>,
    hint: Option<&str>,
    server: Ipv4Addr,
) -> L7Record {
    L7Record {
        conn: ConnMeta {
            client: SocketAddrV4::new(TIEFIGHTER, 41234),
            original_dst: SocketAddrV4::new(server, 80),
        },
        kind,
        method: method.into(),
        url: url.into(),
        host: host.map(Into::into),
        status,
        latency: (kind == L7Kind::Response).then(|| Duration::from_micros(1234)),
        verdict,
        rule,
        policy_hint: hint.map(Into::into),
        time: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_796_000_000_123_456_789),
    }
}

fn records() -> Vec<L7Record> {
    use L7Kind::*;
    use L7Verdict::*;
    let land = (
        "POST",
        "/v1/request-landing",
        Some("deathstar.default.svc.cluster.local"),
    );
    let fire = (
        "PUT",
        "/v1/exhaust-port",
        Some("deathstar.default.svc.cluster.local"),
    );
    vec![
        record(Request, Forwarded, land, None, Some(1), None, DEATHSTAR),
        record(
            Response,
            Forwarded,
            land,
            Some(200),
            Some(1),
            None,
            DEATHSTAR,
        ),
        record(
            Request,
            Denied,
            fire,
            Some(403),
            None,
            Some("policy rule1 allows only POST /v1/request-landing"),
            DEATHSTAR,
        ),
        record(Request, Denied, fire, Some(403), None, None, DEATHSTAR),
        record(
            Request,
            ParseError,
            ("", "", None),
            Some(400),
            None,
            None,
            DEATHSTAR,
        ),
        record(
            Request,
            UpstreamError,
            land,
            Some(503),
            Some(1),
            None,
            DEATHSTAR,
        ),
        record(Request, UpstreamError, land, None, None, None, DEATHSTAR),
        // No HTTP rule any more; the server is not a local pod with rules (egress side).
        record(
            Request,
            Forwarded,
            ("GET", "/v1", None),
            None,
            None,
            None,
            XWING,
        ),
    ]
}

/// Every flow of the fixture, serialised as the lab serves it.
fn serialised() -> Vec<String> {
    let names = names();
    let clock = Clock::with_offset_ns(1_796_000_000_000_000_000);
    let flows: Vec<Flow> = events()
        .iter()
        .map(|raw| from_event(&Event::decode(raw, &clock), &names, "lab"))
        .chain(records().iter().map(|r| from_l7(r, &names, "lab")))
        .collect();
    flows
        .iter()
        .map(|f| serde_json::to_string(f).expect("flow as JSON"))
        .collect()
}

#[test]
fn flows_serialise_to_the_same_hubble_json() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/flows/hubble.jsonl");
    let got = serialised().join("\n") + "\n";
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
        std::fs::write(path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(path).expect("tests/data/flows/hubble.jsonl");
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "flow {i} differs");
    }
    assert_eq!(got.lines().count(), want.lines().count(), "number of flows");
}

/// `lab observe -o json` reads flows from the API and prints them again: nothing may change.
#[test]
fn flows_read_back_print_the_same() {
    for line in serialised() {
        let flow: Flow = serde_json::from_str(&line).expect("a flow reads back");
        assert_eq!(serde_json::to_string(&flow).unwrap(), line);
    }
}
