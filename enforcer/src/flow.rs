//! Flow records shaped like Hubble's (`hubble observe -o json`), built from the datapath's events
//! and the proxy's L7 records, named with pods, identities and the policy that decided — and,
//! for default-deny drops, which policies put the pod in default deny.

use std::{
    collections::VecDeque,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use enforcer_common::*;
use serde::{Deserialize, Serialize};

use crate::engine::{Names, RuleInfo};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Flow {
    /// RFC 3339 time.
    pub time: String,
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_reason_desc: Option<String>,
    #[serde(rename = "IP")]
    pub ip: IpInfo,
    pub l4: L4,
    pub source: EndpointRef,
    pub destination: EndpointRef,
    #[serde(rename = "Type")]
    pub flow_type: String,
    pub node_name: String,
    pub traffic_direction: String,
    pub is_reply: bool,
    pub trace_observation_point: String,
    #[serde(rename = "Summary")]
    pub summary: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub ingress_allowed_by: Vec<PolicyRef>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub egress_allowed_by: Vec<PolicyRef>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub ingress_denied_by: Vec<PolicyRef>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub egress_denied_by: Vec<PolicyRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7: Option<L7>,
    /// The lab's addition: a sentence saying which policy decided and why.
    pub policy_explanation: String,
    /// The lab's addition: what policies in audit mode would have done with this flow.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub dry_run: Vec<DryRun>,
}

/// A policy in audit mode's would-be verdict on a flow.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DryRun {
    pub policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `allow` or `drop`.
    pub would: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IpInfo {
    pub source: String,
    pub destination: String,
    #[serde(rename = "ipVersion")]
    pub ip_version: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct L4 {
    #[serde(rename = "TCP", skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Ports>,
    #[serde(rename = "UDP", skip_serializing_if = "Option::is_none")]
    pub udp: Option<Ports>,
    #[serde(rename = "ICMPv4", skip_serializing_if = "Option::is_none")]
    pub icmpv4: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Ports {
    pub source_port: u16,
    pub destination_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct EndpointRef {
    #[serde(rename = "ID", skip_serializing_if = "is_zero", default)]
    pub id: u32,
    pub identity: u32,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub namespace: String,
    pub labels: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub pod_name: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PolicyRef {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub labels: Vec<String>,
    /// The lab's addition: which rule inside the policy, and where it is written.
    pub rule: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct L7 {
    #[serde(rename = "type")]
    pub kind: String,
    pub latency_ns: u64,
    pub http: Http,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Http {
    #[serde(skip_serializing_if = "is_zero", default)]
    pub code: u32,
    pub method: String,
    pub url: String,
    pub protocol: String,
}

pub fn drop_reason_name(code: u8) -> &'static str {
    match code {
        DROP_INVALID_SOURCE_IP => "INVALID_SOURCE_IP",
        DROP_POLICY_DENIED => "POLICY_DENIED",
        DROP_INVALID_PACKET => "INVALID_PACKET_DROPPED",
        DROP_CT_INVALID_HEADER => "CT_TRUNCATED_OR_INVALID_HEADER",
        DROP_UNSUPPORTED_L3 => "UNSUPPORTED_L3_PROTOCOL",
        DROP_CT_MAP_INSERTION_FAILED => "CT_MAP_INSERTION_FAILED",
        DROP_FRAG_NOT_FOUND => "FRAG_NOT_FOUND",
        DROP_NO_SERVICE_BACKEND => "NO_SERVICE",
        DROP_POLICY_DENY => "POLICY_DENY",
        DROP_PROXY_UNAVAILABLE => "PROXY_UNAVAILABLE",
        DROP_CONN_LIMIT => "CONNECTION_LIMIT_EXCEEDED",
        DROP_PREFILTER => "PREFILTER_DENIED",
        _ => "UNKNOWN",
    }
}

pub fn verdict_name(v: u8) -> &'static str {
    match v {
        FLOW_FORWARDED => "FORWARDED",
        FLOW_DROPPED => "DROPPED",
        FLOW_ERROR => "ERROR",
        FLOW_AUDIT => "AUDIT",
        FLOW_REDIRECTED => "REDIRECTED",
        _ => "VERDICT_UNKNOWN",
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// Converts monotonic `bpf_ktime_get_ns` readings to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn new() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let mono = ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128;
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        Self {
            offset_ns: wall - mono,
        }
    }
    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let ns = (mono_ns as i128 + self.offset_ns).max(0) as u128;
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
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
pub fn from_event(ev: &FlowEvent, names: &Names, clock: &Clock, node_name: &str) -> Flow {
    let saddr = Ipv4Addr::from(u32::from_be(ev.saddr));
    let daddr = Ipv4Addr::from(u32::from_be(ev.daddr));
    let (sport, dport) = (u16::from_be(ev.sport), u16::from_be(ev.dport));
    let source = endpoint_ref(names, saddr, ev.src_identity);
    let destination = endpoint_ref(names, daddr, ev.dst_identity);
    let mut l4 = L4::default();
    let summary;
    match ev.proto {
        6 => {
            let mut flags = serde_json::Map::new();
            for (bit, name) in [
                (1, "FIN"),
                (2, "SYN"),
                (4, "RST"),
                (8, "PSH"),
                (16, "ACK"),
                (32, "URG"),
            ] {
                if ev.tcp_flags & bit != 0 {
                    flags.insert(name.into(), true.into());
                }
            }
            summary = format!(
                "TCP Flags: {}",
                flags.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            l4.tcp = Some(Ports {
                source_port: sport,
                destination_port: dport,
                flags: Some(flags),
            });
        }
        17 => {
            summary = "UDP".into();
            l4.udp = Some(Ports {
                source_port: sport,
                destination_port: dport,
                flags: None,
            });
        }
        1 => {
            summary = "ICMPv4".into();
            l4.icmpv4 = Some(serde_json::json!({}));
        }
        p => summary = format!("IP protocol {p}"),
    }
    let direction = if ev.direction == DIR_INGRESS {
        "INGRESS"
    } else {
        "EGRESS"
    };
    let policy = policy_ref(names, ev.rule_ref);
    let mut flow = Flow {
        time: rfc3339(clock.wall(ev.ts_ns)),
        verdict: verdict_name(ev.verdict).into(),
        drop_reason: (ev.drop_reason != 0).then_some(u32::from(ev.drop_reason)),
        drop_reason_desc: (ev.drop_reason != 0).then(|| drop_reason_name(ev.drop_reason).into()),
        ip: IpInfo {
            source: saddr.to_string(),
            destination: daddr.to_string(),
            ip_version: "IPv4".into(),
        },
        l4,
        source,
        destination,
        flow_type: "L3_L4".into(),
        node_name: node_name.into(),
        traffic_direction: direction.into(),
        is_reply: ev.is_reply != 0,
        trace_observation_point: match ev.obs_point {
            OBS_FROM_POD => "FROM_ENDPOINT",
            OBS_TO_POD => "TO_ENDPOINT",
            OBS_FROM_WORLD => "FROM_NETWORK",
            OBS_TO_WORLD => "TO_NETWORK",
            OBS_XDP => "FROM_NETWORK",
            _ => "UNKNOWN_POINT",
        }
        .into(),
        summary,
        ingress_allowed_by: vec![],
        egress_allowed_by: vec![],
        ingress_denied_by: vec![],
        egress_denied_by: vec![],
        l7: None,
        policy_explanation: String::new(),
        dry_run: Vec::new(),
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
    flow.policy_explanation = explain(ev, names, &flow, saddr, daddr, policy.as_ref());
    flow.dry_run = dry_run(ev, names);
    flow
}

/// Which policies in audit mode would allow or drop this flow.
fn dry_run(ev: &FlowEvent, names: &Names) -> Vec<DryRun> {
    let audit_rule = |r: u32| names.rules.get(r as usize).filter(|i| r != 0 && i.audit);
    let entry = |r: &RuleInfo, would: &str| DryRun {
        policy: r.policy.clone(),
        namespace: r.namespace.clone(),
        would: would.into(),
    };
    match ev.verdict {
        FLOW_AUDIT => match audit_rule(ev.rule_ref) {
            Some(r) => vec![entry(r, "drop")],
            // Default deny: the audit-mode policies that select the endpoint would drop it.
            None if ev.drop_reason == DROP_POLICY_DENIED => {
                let mut out: Vec<DryRun> = names
                    .enforcers
                    .get(&(ev.ep_id, ev.direction))
                    .into_iter()
                    .flatten()
                    .filter_map(|r| audit_rule(*r))
                    .map(|r| entry(r, "drop"))
                    .collect();
                out.dedup();
                out
            }
            None => vec![],
        },
        FLOW_FORWARDED | FLOW_REDIRECTED => audit_rule(ev.audit_rule_ref)
            .map(|r| vec![entry(r, "allow")])
            .unwrap_or_default(),
        _ => vec![],
    }
}

fn explain(
    ev: &FlowEvent,
    names: &Names,
    flow: &Flow,
    saddr: Ipv4Addr,
    daddr: Ipv4Addr,
    policy: Option<&PolicyRef>,
) -> String {
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
    let port = flow
        .l4
        .tcp
        .as_ref()
        .or(flow.l4.udp.as_ref())
        .map(|p| p.destination_port);
    let what = match port {
        Some(p) => format!("{peer} on port {p}"),
        None => peer,
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
                flow.l4
                    .tcp
                    .as_ref()
                    .or(flow.l4.udp.as_ref())
                    .map(|p| p.destination_port)
                    .unwrap_or(0)
            ),
            reason => format!("NodePort connection dropped: {}", drop_reason_name(reason)),
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
        (FLOW_DROPPED, reason) => format!("dropped: {}", drop_reason_name(reason)),
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
        L7Kind::Request => "REQUEST",
        L7Kind::Response => "RESPONSE",
    };
    let verdict = match rec.verdict {
        L7Verdict::Forwarded => "FORWARDED",
        L7Verdict::Denied => "DROPPED",
        L7Verdict::ParseError | L7Verdict::UpstreamError => "ERROR",
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
        time: rfc3339(rec.time),
        verdict: verdict.into(),
        drop_reason: None,
        drop_reason_desc: None,
        ip: IpInfo {
            source: client.to_string(),
            destination: server.to_string(),
            ip_version: "IPv4".into(),
        },
        l4: L4 {
            tcp: Some(Ports {
                source_port: rec.conn.client.port(),
                destination_port: rec.conn.original_dst.port(),
                flags: None,
            }),
            ..Default::default()
        },
        source,
        destination,
        flow_type: "L7".into(),
        node_name: node_name.into(),
        traffic_direction: if ingress { "INGRESS" } else { "EGRESS" }.into(),
        is_reply: rec.kind == L7Kind::Response,
        trace_observation_point: "UNKNOWN_POINT".into(),
        summary: format!("HTTP/1.1 {} {}", rec.method, url),
        ingress_allowed_by: vec![],
        egress_allowed_by: vec![],
        ingress_denied_by: vec![],
        egress_denied_by: vec![],
        l7: Some(L7 {
            kind: kind.into(),
            latency_ns: rec.latency.map(|d| d.as_nanos() as u64).unwrap_or(0),
            http: Http {
                code: u32::from(rec.status.unwrap_or(0)),
                method: rec.method.clone(),
                url,
                protocol: "HTTP/1.1".into(),
            },
        }),
        policy_explanation: explanation,
        dry_run: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_219_200); // 2026-11-21
        assert!(rfc3339(t).starts_with("2026-11-21T00:00:00"));
    }
}
