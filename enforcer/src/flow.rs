//! Flow records shaped like Hubble's (`hubble observe -o json`), built from the datapath's events
//! and the proxy's L7 records, named with pods, identities and the policy that decided — and,
//! for default-deny drops, which policies put the pod in default deny.

use std::{
    collections::VecDeque,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

use enforcer_common::*;
pub use model::flow::*;

use crate::{
    datapath::Event,
    engine::{Names, RuleInfo},
    policy::api::icmpv4_type_name,
};

/// Hubble's drop reason for a datapath drop code.
pub fn drop_reason(code: u8) -> DropReason {
    match code {
        DROP_INVALID_SOURCE_IP => DropReason::InvalidSourceIp,
        DROP_POLICY_DENIED => DropReason::PolicyDenied,
        DROP_INVALID_PACKET => DropReason::InvalidPacketDropped,
        DROP_CT_INVALID_HEADER => DropReason::CtTruncatedOrInvalidHeader,
        DROP_UNSUPPORTED_L3 => DropReason::UnsupportedL3Protocol,
        DROP_CT_MAP_INSERTION_FAILED => DropReason::CtMapInsertionFailed,
        DROP_FRAG_NOT_FOUND => DropReason::FragNotFound,
        DROP_NO_SERVICE_BACKEND => DropReason::NoService,
        DROP_POLICY_DENY => DropReason::PolicyDeny,
        DROP_PROXY_UNAVAILABLE => DropReason::ProxyUnavailable,
        DROP_CONN_LIMIT => DropReason::ConnectionLimitExceeded,
        DROP_PREFILTER => DropReason::PrefilterDenied,
        _ => DropReason::Unknown,
    }
}

pub fn verdict(v: u8) -> Verdict {
    match v {
        FLOW_FORWARDED => Verdict::Forwarded,
        FLOW_DROPPED => Verdict::Dropped,
        FLOW_ERROR => Verdict::Error,
        FLOW_AUDIT => Verdict::Audit,
        FLOW_REDIRECTED => Verdict::Redirected,
        _ => Verdict::VerdictUnknown,
    }
}

pub fn direction(d: u8) -> TrafficDirection {
    if d == DIR_INGRESS {
        TrafficDirection::Ingress
    } else {
        TrafficDirection::Egress
    }
}

fn observation_point(p: u8) -> ObservationPoint {
    match p {
        OBS_FROM_POD => ObservationPoint::FromEndpoint,
        OBS_TO_POD => ObservationPoint::ToEndpoint,
        OBS_FROM_WORLD | OBS_XDP => ObservationPoint::FromNetwork,
        OBS_TO_WORLD => ObservationPoint::ToNetwork,
        _ => ObservationPoint::UnknownPoint,
    }
}

fn endpoint_ref(names: &Names, ip: Ipv4Addr, identity: u32) -> EndpointRef {
    let labels = names.identities.get(&identity).cloned().unwrap_or_default();
    match names
        .endpoints_by_ip
        .get(&ip)
        .and_then(|id| names.endpoints_by_id.get(id))
    {
        Some(ep) => EndpointRef {
            id: ep.ep_id,
            identity,
            namespace: ep.namespace.clone(),
            labels,
            pod_name: ep.pod.clone(),
        },
        None => EndpointRef {
            id: 0,
            identity,
            namespace: String::new(),
            labels,
            pod_name: String::new(),
        },
    }
}

fn policy_ref(names: &Names, rule_ref: u32) -> Option<PolicyRef> {
    let r: &RuleInfo = names
        .rules
        .get(rule_ref as usize)
        .filter(|_| rule_ref != 0)?;
    Some(PolicyRef {
        name: r.policy.clone(),
        namespace: r.namespace.clone(),
        labels: vec![format!("k8s:io.cilium.k8s.policy.name={}", r.policy)],
        rule: describe_rule(r),
    })
}

pub fn describe_rule(r: &RuleInfo) -> String {
    let spec = if r.spec_index > 0 {
        format!("specs[{}].", r.spec_index)
    } else {
        String::new()
    };
    let audit = if r.audit { " (audit mode)" } else { "" };
    format!(
        "{spec}{}[{}] at {}{audit}",
        r.section, r.rule_index, r.source
    )
}

fn display_name(ep: &EndpointRef, ip: Ipv4Addr) -> String {
    if !ep.pod_name.is_empty() {
        format!("{}/{}", ep.namespace, ep.pod_name)
    } else if ep.identity == IDENTITY_HOST {
        "the node (host)".into()
    } else if ep.identity == IDENTITY_WORLD {
        format!("{ip} (world)")
    } else {
        format!("{ip}")
    }
}

/// Builds a flow from a datapath event.
pub fn from_event(ev: &Event, names: &Names, node_name: &str) -> Flow {
    let source = endpoint_ref(names, ev.saddr, ev.src_identity);
    let destination = endpoint_ref(names, ev.daddr, ev.dst_identity);
    let mut l4 = L4::default();
    let summary = match ev.proto {
        6 => {
            let flags = TcpFlags::from_byte(ev.tcp_flags);
            let summary = format!("TCP Flags: {}", flags.names().join(", "));
            l4.tcp = Some(Ports {
                destination_port: ev.dport,
                flags: Some(flags),
                source_port: ev.sport,
            });
            summary
        }
        17 => {
            l4.udp = Some(Ports {
                destination_port: ev.dport,
                flags: None,
                source_port: ev.sport,
            });
            "UDP".into()
        }
        1 => {
            l4.icmpv4 = Some(Icmp {
                icmp_type: ev.icmp_type,
                code: ev.icmp_code,
            });
            // As Hubble: "ICMPv4 EchoRequest".
            match icmpv4_type_name(ev.icmp_type) {
                Some(name) => format!("ICMPv4 {name}"),
                None => format!("ICMPv4 type {}", ev.icmp_type),
            }
        }
        p => format!("IP protocol {p}"),
    };
    let policy = policy_ref(names, ev.rule_ref);
    let mut flow = Flow {
        ip: IpInfo {
            destination: ev.daddr,
            ip_version: IpVersion::IPv4,
            source: ev.saddr,
        },
        summary,
        flow_type: FlowType::L3L4,
        destination,
        drop: (ev.drop_reason != DROP_NONE).then(|| Drop {
            drop_reason: u32::from(ev.drop_reason),
            drop_reason_desc: drop_reason(ev.drop_reason),
        }),
        dry_run: dry_run(ev, names),
        egress_allowed_by: vec![],
        egress_denied_by: vec![],
        ingress_allowed_by: vec![],
        ingress_denied_by: vec![],
        is_reply: ev.is_reply,
        l4,
        l7: None,
        node_name: node_name.into(),
        policy_explanation: String::new(),
        source,
        time: ev.time,
        trace_observation_point: observation_point(ev.obs_point),
        traffic_direction: direction(ev.direction),
        verdict: verdict(ev.verdict),
    };
    let ingress = ev.direction == DIR_INGRESS;
    let denied = ev.verdict == FLOW_DROPPED || ev.verdict == FLOW_AUDIT;
    if let Some(p) = policy.clone() {
        match (ingress, denied) {
            (true, false) => flow.ingress_allowed_by.push(p),
            (false, false) => flow.egress_allowed_by.push(p),
            (true, true) => flow.ingress_denied_by.push(p),
            (false, true) => flow.egress_denied_by.push(p),
        }
    }
    flow.policy_explanation = explain(ev, names, &flow, policy.as_ref());
    flow
}

/// Which policies in audit mode would allow or drop this flow.
fn dry_run(ev: &Event, names: &Names) -> Vec<DryRun> {
    let audit_rule = |r: u32| names.rules.get(r as usize).filter(|i| r != 0 && i.audit);
    let entry = |r: &RuleInfo, would: Would| DryRun {
        namespace: r.namespace.clone(),
        policy: r.policy.clone(),
        would,
    };
    match ev.verdict {
        FLOW_AUDIT => match audit_rule(ev.rule_ref) {
            Some(r) => vec![entry(r, Would::Drop)],
            // Default deny: the audit-mode policies that select the endpoint would drop it.
            None if ev.drop_reason == DROP_POLICY_DENIED => {
                let mut out: Vec<DryRun> = names
                    .enforcers
                    .get(&(ev.ep_id, ev.direction))
                    .into_iter()
                    .flatten()
                    .filter_map(|r| audit_rule(*r))
                    .map(|r| entry(r, Would::Drop))
                    .collect();
                out.dedup();
                out
            }
            None => vec![],
        },
        FLOW_FORWARDED | FLOW_REDIRECTED => audit_rule(ev.audit_rule_ref)
            .map(|r| vec![entry(r, Would::Allow)])
            .unwrap_or_default(),
        _ => vec![],
    }
}

fn explain(ev: &Event, names: &Names, flow: &Flow, policy: Option<&PolicyRef>) -> String {
    let (saddr, daddr) = (ev.saddr, ev.daddr);
    let subject_is_dst = ev.direction == DIR_INGRESS;
    let (subject, peer) = if subject_is_dst {
        (
            display_name(&flow.destination, daddr),
            display_name(&flow.source, saddr),
        )
    } else {
        (
            display_name(&flow.source, saddr),
            display_name(&flow.destination, daddr),
        )
    };
    let dir = if subject_is_dst { "ingress" } else { "egress" };
    let what = match (flow.destination_port(), flow.l4.icmpv4) {
        (Some(p), _) => format!("{peer} on port {p}"),
        (None, Some(icmp)) => match icmpv4_type_name(icmp.icmp_type) {
            Some(name) => format!("{peer} for ICMP {name} (type {})", icmp.icmp_type),
            None => format!("{peer} for ICMP type {}", icmp.icmp_type),
        },
        (None, None) => peer,
    };
    let enforcers = || {
        let refs = names
            .enforcers
            .get(&(ev.ep_id, ev.direction))
            .cloned()
            .unwrap_or_default();
        let mut pols: Vec<String> = refs
            .iter()
            .filter_map(|r| names.rules.get(*r as usize))
            .map(|r| r.policy.clone())
            .collect();
        pols.dedup();
        pols
    };
    if ev.obs_point == OBS_XDP {
        return format!(
            "dropped at XDP on the external interface: the prefilter's deny list covers {saddr}"
        );
    }
    if ev.obs_point == OBS_FROM_WORLD {
        return match ev.drop_reason {
            DROP_NONE => format!(
                "a connection from outside the cluster ({}) to NodePort {} of the node; the backend pod's ingress policy decides next",
                display_name(&flow.source, saddr),
                flow.destination_port().unwrap_or(0)
            ),
            reason => format!(
                "NodePort connection dropped: {}",
                drop_reason(reason).name()
            ),
        };
    }
    if ev.ct_flags & CT_BYPASS != 0 {
        return format!(
            "forwarded WITHOUT any policy check: the prefilter bypass (unsafe) is on for this NodePort, so {subject} accepts {what}"
        );
    }
    match (ev.verdict, ev.drop_reason) {
        (FLOW_DROPPED | FLOW_AUDIT, DROP_POLICY_DENIED) => {
            let pols = enforcers();
            let would = if ev.verdict == FLOW_AUDIT {
                "would be dropped (audit mode)"
            } else {
                "dropped"
            };
            if pols.is_empty() {
                format!("{would}: default deny for the {dir} of {subject}; no rule allows {what}")
            } else {
                format!(
                    "{would}: default deny — policy {} selects {subject} for {dir}, and no rule allows {what}",
                    pols.join(", ")
                )
            }
        }
        (FLOW_DROPPED | FLOW_AUDIT, DROP_POLICY_DENY) => format!(
            "{}: explicit deny of {what} by {}",
            if ev.verdict == FLOW_AUDIT {
                "would be denied (audit mode)"
            } else {
                "denied"
            },
            policy
                .map(|p| format!("policy {} ({})", p.name, p.rule))
                .unwrap_or_else(|| "a deny rule".into())
        ),
        (FLOW_DROPPED, DROP_CONN_LIMIT) => format!(
            "refused with a TCP reset: {subject} is at its connection limit{} — the client fails at once instead of retrying",
            names
                .rules
                .get(ev.rule_ref as usize)
                .map(|r| format!(" ({}, {}, {})", r.policy, r.section, r.source))
                .unwrap_or_default()
        ),
        (FLOW_DROPPED, reason) => format!("dropped: {}", drop_reason(reason).name()),
        (FLOW_REDIRECTED, _) => format!(
            "sent to the L7 proxy: {} has HTTP rules for {what}",
            policy
                .map(|p| format!("policy {}", p.name))
                .unwrap_or_else(|| subject.clone())
        ),
        _ => match policy {
            Some(p) => format!(
                "{dir} of {subject} allowed by policy {} ({})",
                p.name, p.rule
            ),
            None => {
                format!("{dir} of {subject}: no policy selects it for {dir}, everything is allowed")
            }
        },
    }
}

/// Builds a flow from the proxy's record of one HTTP request or response.
pub fn from_l7(rec: &crate::proxy::L7Record, names: &Names, node_name: &str) -> Flow {
    use crate::proxy::{L7Kind, L7Verdict};
    let (client, server) = (*rec.conn.client.ip(), *rec.conn.original_dst.ip());
    let source = endpoint_ref(names, client, names.identity_of(client));
    let destination = endpoint_ref(names, server, names.identity_of(server));
    // Whose rules judged it: the server's ingress when it is a local pod with HTTP rules.
    let ingress = names.endpoint_by_ip(server).is_some_and(|ep| {
        names.l7.keys().any(|k| {
            k.endpoint == ep
                && k.direction == crate::policy::resolve::Direction::Ingress
                && k.port == rec.conn.original_dst.port()
        })
    });
    let kind = match rec.kind {
        L7Kind::Request => L7Type::Request,
        L7Kind::Response => L7Type::Response,
    };
    let verdict = match rec.verdict {
        L7Verdict::Forwarded => Verdict::Forwarded,
        L7Verdict::Denied => Verdict::Dropped,
        L7Verdict::ParseError | L7Verdict::UpstreamError => Verdict::Error,
    };
    let host = rec
        .host
        .clone()
        .unwrap_or_else(|| rec.conn.original_dst.to_string());
    let url = format!("http://{host}{}", rec.url);
    let policy = rec.rule.and_then(|r| policy_ref(names, r));
    let explanation = match rec.verdict {
        L7Verdict::Denied => format!(
            "HTTP {} {} denied (403): {}",
            rec.method,
            rec.url,
            rec.policy_hint
                .clone()
                .unwrap_or_else(|| "no HTTP rule allows it".into())
        ),
        L7Verdict::ParseError => format!(
            "malformed or ambiguous HTTP request refused with {} and not forwarded",
            rec.status.unwrap_or(400)
        ),
        L7Verdict::UpstreamError => format!(
            "the server could not be reached or answered badly ({})",
            rec.status.unwrap_or(502)
        ),
        L7Verdict::Forwarded => match (&policy, rec.kind) {
            (Some(p), L7Kind::Request) => format!(
                "HTTP {} {} allowed by policy {} ({})",
                rec.method, rec.url, p.name, p.rule
            ),
            (None, L7Kind::Request) => format!(
                "HTTP {} {} allowed: no HTTP rule applies to this connection any more",
                rec.method, rec.url
            ),
            (_, L7Kind::Response) => format!(
                "response {} to {} {}",
                rec.status.unwrap_or(0),
                rec.method,
                rec.url
            ),
        },
    };
    let mut flow = Flow {
        ip: IpInfo {
            destination: server,
            ip_version: IpVersion::IPv4,
            source: client,
        },
        summary: format!("HTTP/1.1 {} {}", rec.method, url),
        flow_type: FlowType::L7,
        destination,
        drop: None,
        dry_run: Vec::new(),
        egress_allowed_by: vec![],
        egress_denied_by: vec![],
        ingress_allowed_by: vec![],
        ingress_denied_by: vec![],
        is_reply: rec.kind == L7Kind::Response,
        l4: L4 {
            tcp: Some(Ports {
                destination_port: rec.conn.original_dst.port(),
                flags: None,
                source_port: rec.conn.client.port(),
            }),
            ..Default::default()
        },
        l7: Some(L7 {
            http: Http {
                code: u32::from(rec.status.unwrap_or(0)),
                method: rec.method.clone(),
                protocol: "HTTP/1.1".into(),
                url,
            },
            latency_ns: rec.latency.map(|d| d.as_nanos() as u64).unwrap_or(0),
            kind,
        }),
        node_name: node_name.into(),
        policy_explanation: explanation,
        source,
        time: rec.time,
        trace_observation_point: ObservationPoint::UnknownPoint,
        traffic_direction: if ingress {
            TrafficDirection::Ingress
        } else {
            TrafficDirection::Egress
        },
        verdict,
    };
    if let Some(p) = policy {
        if ingress {
            flow.ingress_allowed_by.push(p);
        } else {
            flow.egress_allowed_by.push(p);
        }
    }
    flow
}

/// Recent records, kept for `lab observe` without `--follow`, and a live feed.
pub struct FlowLog<T> {
    recent: Mutex<VecDeque<Arc<T>>>,
    capacity: usize,
    live: tokio::sync::broadcast::Sender<Arc<T>>,
}

impl<T> FlowLog<T> {
    pub fn new(capacity: usize) -> Self {
        let (live, _) = tokio::sync::broadcast::channel(4096);
        Self {
            recent: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            live,
        }
    }

    pub fn push(&self, item: T) {
        let item = Arc::new(item);
        {
            let mut r = self.recent.lock().expect("flow log lock");
            if r.len() == self.capacity {
                r.pop_front();
            }
            r.push_back(item.clone());
        }
        let _ = self.live.send(item);
    }

    pub fn recent(&self) -> Vec<Arc<T>> {
        self.recent
            .lock()
            .expect("flow log lock")
            .iter()
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<T>> {
        self.live.subscribe()
    }
}
