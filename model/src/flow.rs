//! Flows, shaped like Hubble's (`hubble observe -o json`): what the datapath and the L7 proxy
//! decided about one packet or request, named with pods, identities and the policy rule that
//! decided, plus the lab's own two fields (`policy_explanation`, `dry_run`).
//!
//! Field order: every struct here declares its fields in the byte order of their JSON names
//! (upper case first), so the JSON written is exactly the JSON users have always read, whose keys
//! come sorted. `enforcer/tests/flows.rs` holds that byte for byte.

use std::{net::Ipv4Addr, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::time::rfc3339;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Flow {
    #[serde(rename = "IP")]
    pub ip: IpInfo,
    /// One line: `TCP Flags: SYN`, `UDP`, `HTTP/1.1 GET http://…`.
    #[serde(rename = "Summary")]
    pub summary: String,
    #[serde(rename = "Type")]
    pub flow_type: FlowType,
    pub destination: EndpointRef,
    /// Why it was dropped (drops only).
    #[serde(flatten, skip_serializing_if = "Option::is_none", default)]
    pub drop: Option<Drop>,
    /// The lab's addition: what policies in audit mode would have done with this flow.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub dry_run: Vec<DryRun>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub egress_allowed_by: Vec<PolicyRef>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub egress_denied_by: Vec<PolicyRef>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub ingress_allowed_by: Vec<PolicyRef>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub ingress_denied_by: Vec<PolicyRef>,
    pub is_reply: bool,
    pub l4: L4,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub l7: Option<L7>,
    pub node_name: String,
    /// The lab's addition: a sentence saying which policy decided and why.
    pub policy_explanation: String,
    pub source: EndpointRef,
    #[serde(with = "rfc3339")]
    pub time: SystemTime,
    pub trace_observation_point: ObservationPoint,
    pub traffic_direction: TrafficDirection,
    pub verdict: Verdict,
}

impl Flow {
    /// The destination port of a TCP or UDP flow.
    pub fn destination_port(&self) -> Option<u16> {
        self.l4.ports().map(|p| p.destination_port)
    }

    pub fn source_port(&self) -> Option<u16> {
        self.l4.ports().map(|p| p.source_port)
    }

    /// Whether a policy rule allowed or denied it (rather than no policy at all).
    pub fn decided_by_rule(&self) -> bool {
        !self.ingress_allowed_by.is_empty()
            || !self.egress_allowed_by.is_empty()
            || !self.ingress_denied_by.is_empty()
            || !self.egress_denied_by.is_empty()
    }

    /// An HTTP request the L7 proxy refused (dropped, or answered 403).
    pub fn is_l7_denied(&self) -> bool {
        self.flow_type == FlowType::L7
            && (self.verdict == Verdict::Dropped
                || self.l7.as_ref().is_some_and(|l7| l7.http.code == 403))
    }

    /// Dropped by the datapath, or refused by the proxy.
    pub fn is_blocked(&self) -> bool {
        self.verdict == Verdict::Dropped || self.is_l7_denied()
    }

    /// DNS traffic (to or from port 53).
    pub fn is_dns(&self) -> bool {
        self.destination_port() == Some(53)
            || self.l4.udp.as_ref().is_some_and(|u| u.source_port == 53)
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Forwarded,
    Dropped,
    Error,
    Audit,
    Redirected,
    VerdictUnknown,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Forwarded => "FORWARDED",
            Verdict::Dropped => "DROPPED",
            Verdict::Error => "ERROR",
            Verdict::Audit => "AUDIT",
            Verdict::Redirected => "REDIRECTED",
            Verdict::VerdictUnknown => "VERDICT_UNKNOWN",
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrafficDirection {
    Ingress,
    Egress,
}

impl TrafficDirection {
    pub fn name(self) -> &'static str {
        match self {
            TrafficDirection::Ingress => "INGRESS",
            TrafficDirection::Egress => "EGRESS",
        }
    }

    /// `ingress` / `egress`, as policies and metrics write it.
    pub fn lower(self) -> &'static str {
        match self {
            TrafficDirection::Ingress => "ingress",
            TrafficDirection::Egress => "egress",
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum FlowType {
    #[serde(rename = "L3_L4")]
    L3L4,
    L7,
}

impl FlowType {
    pub fn name(self) -> &'static str {
        match self {
            FlowType::L3L4 => "L3_L4",
            FlowType::L7 => "L7",
        }
    }
}

/// Where the packet was seen.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ObservationPoint {
    FromEndpoint,
    ToEndpoint,
    /// From outside the cluster (the node's external interface, XDP or TC).
    FromNetwork,
    ToNetwork,
    UnknownPoint,
}

/// Hubble's drop reasons (the numbers are Cilium's, beyond 239 the lab's own).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DropReason {
    InvalidSourceIp,
    /// Default deny: no rule allows it.
    PolicyDenied,
    InvalidPacketDropped,
    CtTruncatedOrInvalidHeader,
    UnsupportedL3Protocol,
    CtMapInsertionFailed,
    FragNotFound,
    NoService,
    /// An explicit deny rule.
    PolicyDeny,
    ProxyUnavailable,
    ConnectionLimitExceeded,
    PrefilterDenied,
    Unknown,
}

impl DropReason {
    /// Hubble's name: `POLICY_DENIED`.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::InvalidSourceIp => "INVALID_SOURCE_IP",
            DropReason::PolicyDenied => "POLICY_DENIED",
            DropReason::InvalidPacketDropped => "INVALID_PACKET_DROPPED",
            DropReason::CtTruncatedOrInvalidHeader => "CT_TRUNCATED_OR_INVALID_HEADER",
            DropReason::UnsupportedL3Protocol => "UNSUPPORTED_L3_PROTOCOL",
            DropReason::CtMapInsertionFailed => "CT_MAP_INSERTION_FAILED",
            DropReason::FragNotFound => "FRAG_NOT_FOUND",
            DropReason::NoService => "NO_SERVICE",
            DropReason::PolicyDeny => "POLICY_DENY",
            DropReason::ProxyUnavailable => "PROXY_UNAVAILABLE",
            DropReason::ConnectionLimitExceeded => "CONNECTION_LIMIT_EXCEEDED",
            DropReason::PrefilterDenied => "PREFILTER_DENIED",
            DropReason::Unknown => "UNKNOWN",
        }
    }

    /// Cilium's human-readable text, the `reason` label of `cilium_drop_count_total`.
    pub fn metric_label(self) -> &'static str {
        match self {
            DropReason::PolicyDenied => "Policy denied",
            DropReason::PolicyDeny => "Policy denied by denylist",
            DropReason::InvalidSourceIp => "Invalid source ip",
            DropReason::InvalidPacketDropped => "Invalid packet",
            DropReason::CtTruncatedOrInvalidHeader => "CT: Truncated or invalid header",
            DropReason::UnsupportedL3Protocol => "Unsupported L3 protocol",
            DropReason::CtMapInsertionFailed => "CT: Map insertion failed",
            DropReason::FragNotFound => "Fragmentation needed",
            DropReason::ProxyUnavailable => "Proxy redirection unavailable",
            DropReason::ConnectionLimitExceeded => "Connection limit exceeded",
            DropReason::PrefilterDenied => "Denied by prefilter",
            DropReason::NoService => "NO_SERVICE",
            DropReason::Unknown => "UNKNOWN",
        }
    }
}

/// A drop's code (Cilium's number, kept even when the lab has no name for it) and its name.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Drop {
    pub drop_reason: u32,
    pub drop_reason_desc: DropReason,
}

/// A policy in audit mode's would-be verdict on a flow.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DryRun {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub namespace: Option<String>,
    pub policy: String,
    pub would: Would,
}

impl DryRun {
    /// `namespace/name`, or the name of a clusterwide policy.
    pub fn policy_key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.policy),
            None => self.policy.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Would {
    Allow,
    Drop,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpInfo {
    pub destination: Ipv4Addr,
    #[serde(rename = "ipVersion")]
    pub ip_version: IpVersion,
    pub source: Ipv4Addr,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum IpVersion {
    IPv4,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct L4 {
    #[serde(rename = "ICMPv4", skip_serializing_if = "Option::is_none", default)]
    pub icmpv4: Option<Icmp>,
    #[serde(rename = "TCP", skip_serializing_if = "Option::is_none", default)]
    pub tcp: Option<Ports>,
    #[serde(rename = "UDP", skip_serializing_if = "Option::is_none", default)]
    pub udp: Option<Ports>,
}

impl L4 {
    /// The ports of a TCP or UDP flow.
    pub fn ports(&self) -> Option<&Ports> {
        self.tcp.as_ref().or(self.udp.as_ref())
    }
}

/// ICMP details, as Hubble's `l4.ICMPv4`: the type (8 for an echo request) and code.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Icmp {
    #[serde(rename = "type", default)]
    pub icmp_type: u8,
    #[serde(default)]
    pub code: u8,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ports {
    pub destination_port: u16,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flags: Option<TcpFlags>,
    pub source_port: u16,
}

/// The TCP flags set in the packet (only those set are written).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub struct TcpFlags {
    #[serde(skip_serializing_if = "is_false", default)]
    pub ack: bool,
    #[serde(skip_serializing_if = "is_false", default)]
    pub fin: bool,
    #[serde(skip_serializing_if = "is_false", default)]
    pub psh: bool,
    #[serde(skip_serializing_if = "is_false", default)]
    pub rst: bool,
    #[serde(skip_serializing_if = "is_false", default)]
    pub syn: bool,
    #[serde(skip_serializing_if = "is_false", default)]
    pub urg: bool,
}

impl TcpFlags {
    /// From the TCP header's flags byte.
    pub fn from_byte(b: u8) -> Self {
        Self {
            fin: b & 1 != 0,
            syn: b & 2 != 0,
            rst: b & 4 != 0,
            psh: b & 8 != 0,
            ack: b & 16 != 0,
            urg: b & 32 != 0,
        }
    }

    /// The names of the flags set, in Hubble's order: `ACK, SYN`.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.ack, "ACK"),
            (self.fin, "FIN"),
            (self.psh, "PSH"),
            (self.rst, "RST"),
            (self.syn, "SYN"),
            (self.urg, "URG"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect()
    }
}

fn is_false(b: &bool) -> bool {
    !b
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// One side of a flow: a pod (with its endpoint ID), or an address outside the cluster with
/// its identity (`world`, a CIDR identity, the node).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointRef {
    #[serde(rename = "ID", skip_serializing_if = "is_zero", default)]
    pub id: u32,
    pub identity: u32,
    pub labels: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub pod_name: String,
}

impl EndpointRef {
    /// `namespace/pod`, if it is a pod.
    pub fn pod(&self) -> Option<String> {
        (!self.pod_name.is_empty()).then(|| format!("{}/{}", self.namespace, self.pod_name))
    }
}

/// The policy (and the lab's addition: the rule and where it is written) that allowed or
/// denied a flow.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyRef {
    pub labels: Vec<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub namespace: Option<String>,
    /// `ingress[0] at file.yaml:12`.
    pub rule: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct L7 {
    pub http: Http,
    pub latency_ns: u64,
    #[serde(rename = "type")]
    pub kind: L7Type,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum L7Type {
    Request,
    Response,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Http {
    /// The status sent to the client (0, not written, for a request still under way).
    #[serde(skip_serializing_if = "is_zero", default)]
    pub code: u32,
    pub method: String,
    pub protocol: String,
    pub url: String,
}

/// Which flows a listing or a stream returns (the query of `/api/flows`).
#[derive(Debug, Default, Deserialize, Serialize, Clone, PartialEq)]
pub struct FlowFilter {
    /// `NAMESPACE/POD` or `POD` (matches source or destination).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pod: Option<String>,
    /// FORWARDED, DROPPED, AUDIT, REDIRECTED, ... (any case).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub verdict: Option<String>,
    /// Only flows of this type: L7 or L3_L4 (any case).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none", default)]
    pub flow_type: Option<String>,
    /// The newest this many.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub limit: Option<usize>,
    /// Only flows after this time.
    #[serde(
        with = "rfc3339::option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub since: Option<SystemTime>,
}

impl FlowFilter {
    pub fn matches(&self, flow: &Flow) -> bool {
        if let Some(v) = &self.verdict
            && !flow.verdict.name().eq_ignore_ascii_case(v)
        {
            return false;
        }
        if let Some(t) = &self.flow_type
            && !flow.flow_type.name().eq_ignore_ascii_case(t)
        {
            return false;
        }
        if let Some(since) = self.since
            && flow.time <= since
        {
            return false;
        }
        if let Some(p) = &self.pod {
            let (ns, name) = match p.split_once('/') {
                Some((ns, n)) => (Some(ns), n),
                None => (None, p.as_str()),
            };
            let hit = |side: &EndpointRef| {
                side.pod_name == name && ns.is_none_or(|ns| side.namespace == ns)
            };
            if !hit(&flow.source) && !hit(&flow.destination) {
                return false;
            }
        }
        true
    }

    /// The query string for `/api/flows?…` (without the `?`).
    pub fn query(&self) -> String {
        let mut q = Vec::new();
        if let Some(l) = self.limit {
            q.push(format!("limit={l}"));
        }
        for (k, v) in [
            ("pod", &self.pod),
            ("verdict", &self.verdict),
            ("type", &self.flow_type),
        ] {
            if let Some(v) = v {
                q.push(format!("{k}={}", encode_query_value(v)));
            }
        }
        if let Some(t) = self.since {
            q.push(format!("since={}", encode_query_value(&rfc3339::format(t))));
        }
        q.join("&")
    }
}

/// Percent-encodes what a query value cannot hold as it is.
fn encode_query_value(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn flow() -> Flow {
        let side = |pod: &str| EndpointRef {
            id: 1,
            identity: 256,
            labels: vec![],
            namespace: "default".into(),
            pod_name: pod.into(),
        };
        Flow {
            ip: IpInfo {
                destination: Ipv4Addr::new(10, 244, 0, 2),
                ip_version: IpVersion::IPv4,
                source: Ipv4Addr::new(10, 244, 0, 4),
            },
            summary: "TCP Flags: SYN".into(),
            flow_type: FlowType::L3L4,
            destination: side("deathstar-1"),
            drop: Some(Drop {
                drop_reason: 133,
                drop_reason_desc: DropReason::PolicyDenied,
            }),
            dry_run: vec![],
            egress_allowed_by: vec![],
            egress_denied_by: vec![],
            ingress_allowed_by: vec![],
            ingress_denied_by: vec![],
            is_reply: false,
            l4: L4 {
                tcp: Some(Ports {
                    destination_port: 80,
                    flags: Some(TcpFlags::from_byte(2)),
                    source_port: 40000,
                }),
                ..Default::default()
            },
            l7: None,
            node_name: "lab".into(),
            policy_explanation: String::new(),
            source: side("xwing"),
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_219_200),
            trace_observation_point: ObservationPoint::ToEndpoint,
            traffic_direction: TrafficDirection::Ingress,
            verdict: Verdict::Dropped,
        }
    }

    #[test]
    fn filter_by_pod_verdict_type_and_time() {
        let flow = flow();
        let f = |pod: Option<&str>, verdict: Option<&str>| FlowFilter {
            pod: pod.map(Into::into),
            verdict: verdict.map(Into::into),
            ..Default::default()
        };
        assert!(f(Some("xwing"), Some("dropped")).matches(&flow));
        assert!(f(Some("default/deathstar-1"), None).matches(&flow));
        assert!(!f(Some("kube-system/deathstar-1"), None).matches(&flow));
        assert!(!f(None, Some("FORWARDED")).matches(&flow));
        let of_type = |t: &str| FlowFilter {
            flow_type: Some(t.into()),
            ..Default::default()
        };
        assert!(of_type("l3_l4").matches(&flow));
        assert!(!of_type("L7").matches(&flow));
        let since = |t: SystemTime| FlowFilter {
            since: Some(t),
            ..Default::default()
        };
        assert!(!since(flow.time).matches(&flow));
        assert!(since(flow.time - Duration::from_nanos(1)).matches(&flow));
    }

    #[test]
    fn filter_round_trips_through_its_query() {
        let f = FlowFilter {
            pod: Some("default/xwing".into()),
            verdict: Some("DROPPED".into()),
            flow_type: None,
            limit: Some(5),
            since: Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(1_795_219_200_000_000_001)),
        };
        assert_eq!(
            f.query(),
            "limit=5&pod=default/xwing&verdict=DROPPED&since=2026-11-21T00:00:00.000000001Z"
        );
    }

    #[test]
    fn json_keys_come_sorted_and_round_trip() {
        let flow = flow();
        let text = serde_json::to_string(&flow).unwrap();
        let sorted = serde_json::to_value(&flow).unwrap().to_string();
        assert_eq!(text, sorted, "struct order is the sorted order");
        let back: Flow = serde_json::from_str(&text).unwrap();
        assert_eq!(back, flow);
    }

    #[test]
    fn tcp_flags_by_name() {
        assert_eq!(TcpFlags::from_byte(2 | 16).names(), ["ACK", "SYN"]);
        assert_eq!(
            serde_json::to_string(&TcpFlags::from_byte(1 | 4)).unwrap(),
            r#"{"FIN":true,"RST":true}"#
        );
    }
}
