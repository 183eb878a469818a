//! The kernel programs on real veths between real namespaces: the POLICY map decides whether a
//! TCP connection passes, replies pass by connection tracking, and drops become flow events.
//! Needs root.

use std::{net::Ipv4Addr, time::Duration};

use enforcer::{
    datapath::{Datapath, EndpointEntry, Event},
    policy::resolve::{Direction, MapKey, MapValue, Verdict},
};
use enforcer_common::*;
use testkit::{BpfFs, TcpServer, Topology, in_netns, require_root, tcp_connects, tcp_roundtrip};

const PORT: u16 = 8080;
const SHORT: Duration = Duration::from_millis(600);
const LONG: Duration = Duration::from_secs(3);

struct Lab {
    topo: Topology,
    dp: Datapath,
    _bpf: BpfFs,
}

/// Two pods (ids 1 and 2, identities 1001 and 1002) with the programs attached.
fn lab() -> Lab {
    require_root();
    let topo = Topology::new(2).expect("topology");
    let bpf = BpfFs::new().expect("bpffs");
    let mut dp = Datapath::load(&bpf.path).expect("load datapath");
    let node = topo.node.path();
    for (i, pod) in topo.pods.iter().enumerate() {
        let iface = pod.node_if.clone();
        let (links, ifindex) = in_netns(&node, || {
            let links = dp.attach_pod(&iface).expect("attach");
            (
                links,
                nix::net::if_::if_nametoindex(iface.as_str()).expect("ifindex"),
            )
        })
        .expect("netns");
        Datapath::pin_links(links).expect("pin");
        let ep = EndpointEntry {
            ep_id: i as u32 + 1,
            identity: 1001 + i as u32,
            ip: pod.ip,
            flags: 0,
        };
        dp.set_endpoint(ifindex, &ep).expect("endpoint");
        dp.set_ipcache(
            pod.ip,
            32,
            IpcacheValue {
                identity: ep.identity,
                ep_id: ep.ep_id,
                ep_flags: 0,
            },
        )
        .expect("ipcache");
    }
    Lab {
        topo,
        dp,
        _bpf: bpf,
    }
}

fn ifindex(lab: &Lab, pod: usize) -> u32 {
    let iface = lab.topo.pods[pod].node_if.clone();
    in_netns(&lab.topo.node.path(), || {
        nix::net::if_::if_nametoindex(iface.as_str()).unwrap()
    })
    .unwrap()
}

fn set_flags(lab: &mut Lab, pod: usize, flags: u32) {
    let idx = ifindex(lab, pod);
    let p = &lab.topo.pods[pod];
    let ep = EndpointEntry {
        ep_id: pod as u32 + 1,
        identity: 1001 + pod as u32,
        ip: p.ip,
        flags,
    };
    lab.dp.set_endpoint(idx, &ep).unwrap();
    lab.dp
        .set_ipcache(
            p.ip,
            32,
            IpcacheValue {
                identity: ep.identity,
                ep_id: ep.ep_id,
                ep_flags: flags,
            },
        )
        .unwrap();
}

fn allow(lab: &mut Lab, ep: u32, dir: Direction, peer: u32, port: u16, verdict: Verdict) {
    let key = MapKey::exact(ep, peer, dir, 6, port);
    let value = MapValue {
        verdict,
        audit_verdict: verdict,
        proxy_port: 0,
        rule_ref: 7,
        audit_rule_ref: 7,
    };
    lab.dp.set_policy(&key, &value).unwrap();
}

fn drain_events(lab: &mut Lab) -> Vec<Event> {
    let mut reader = lab.dp.take_events().expect("ring buffer");
    let mut out = Vec::new();
    reader.drain(&mut out);
    out
}

#[test]
fn no_policy_forwards_and_tracks() {
    let lab = lab();
    let _srv = TcpServer::start(&lab.topo.pods[1].ns, PORT, b"hello from pod 2").unwrap();
    let reply =
        tcp_roundtrip(&lab.topo.pods[0].ns, lab.topo.pods[1].ip, PORT, b"hi", LONG).unwrap();
    assert_eq!(reply, b"hello from pod 2");
    let ct = lab.dp.conntrack();
    assert!(
        ct.iter()
            .any(|c| c.direction == Direction::Egress && c.destination.port() == PORT),
        "egress entry"
    );
    assert!(
        ct.iter()
            .any(|c| c.direction == Direction::Ingress && c.destination.port() == PORT),
        "ingress entry"
    );
}

#[test]
fn default_deny_drops_until_the_map_allows() {
    let mut lab = lab();
    let _srv = TcpServer::start(&lab.topo.pods[1].ns, PORT, b"ok").unwrap();
    let (a, b) = (lab.topo.pods[0].ip, lab.topo.pods[1].ip);
    set_flags(&mut lab, 1, EP_INGRESS_ENFORCED | EP_INGRESS_WOULD_ENFORCE);
    assert!(
        !tcp_connects(&lab.topo.pods[0].ns, b, PORT, SHORT).unwrap(),
        "default deny must drop"
    );

    allow(&mut lab, 2, Direction::Ingress, 1001, PORT, Verdict::Allow);
    assert_eq!(
        tcp_roundtrip(&lab.topo.pods[0].ns, b, PORT, b"x", LONG).unwrap(),
        b"ok"
    );

    // An explicit deny for the same key wins, and the reason says so.
    allow(&mut lab, 2, Direction::Ingress, 1001, PORT, Verdict::Deny);
    assert!(
        !tcp_connects(&lab.topo.pods[0].ns, b, PORT, SHORT).unwrap(),
        "deny must drop"
    );

    let events = drain_events(&mut lab);
    let drops: Vec<_> = events
        .iter()
        .filter(|e| e.verdict == FLOW_DROPPED)
        .collect();
    assert!(
        drops
            .iter()
            .any(|e| e.drop_reason == DROP_POLICY_DENIED && e.saddr == a)
    );
    assert!(
        drops
            .iter()
            .any(|e| e.drop_reason == DROP_POLICY_DENY && e.rule_ref == 7)
    );
    assert!(
        events
            .iter()
            .any(|e| e.verdict == FLOW_FORWARDED && e.direction == DIR_INGRESS)
    );
    let _ = Ipv4Addr::UNSPECIFIED;
}

#[test]
fn egress_default_deny_and_replies() {
    let mut lab = lab();
    let _srv = TcpServer::start(&lab.topo.pods[1].ns, PORT, b"pong").unwrap();
    let b = lab.topo.pods[1].ip;
    // Pod 1 may only send to pod 2 on PORT; pod 2's replies pass by tracking even though
    // pod 2 is in egress default deny itself.
    set_flags(&mut lab, 0, EP_EGRESS_ENFORCED | EP_EGRESS_WOULD_ENFORCE);
    set_flags(&mut lab, 1, EP_EGRESS_ENFORCED | EP_EGRESS_WOULD_ENFORCE);
    assert!(!tcp_connects(&lab.topo.pods[0].ns, b, PORT, SHORT).unwrap());
    allow(&mut lab, 1, Direction::Egress, 1002, PORT, Verdict::Allow);
    assert_eq!(
        tcp_roundtrip(&lab.topo.pods[0].ns, b, PORT, b"ping", LONG).unwrap(),
        b"pong"
    );
}

#[test]
fn audit_mode_forwards_would_be_drops() {
    let mut lab = lab();
    let _srv = TcpServer::start(&lab.topo.pods[1].ns, PORT, b"ok").unwrap();
    let b = lab.topo.pods[1].ip;
    set_flags(&mut lab, 1, EP_INGRESS_ENFORCED | EP_INGRESS_WOULD_ENFORCE);
    lab.dp.set_config_flags(CFG_AUDIT_ALL).unwrap();
    assert_eq!(
        tcp_roundtrip(&lab.topo.pods[0].ns, b, PORT, b"x", LONG).unwrap(),
        b"ok"
    );
    let events = drain_events(&mut lab);
    assert!(
        events
            .iter()
            .any(|e| e.verdict == FLOW_AUDIT && e.drop_reason == DROP_POLICY_DENIED)
    );
}
