//! The `toPorts` part of a rule: ports and port ranges, L4 protocols and L7 (HTTP) rules, with
//! the decoding Cilium allows (a port as a number or a string, `ANY` for every protocol).

use std::collections::BTreeMap;

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, Visitor},
};
use serde_json::Value;

use super::FqdnSelector;

/// A `toPorts` entry of an allow rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortProtocol>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<L7Rules>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_names: Option<Vec<String>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<Value>,
    /// Unsupported.
    #[serde(rename = "originatingTLS", skip_serializing_if = "Option::is_none")]
    pub originating_tls: Option<Value>,
    /// Unsupported.
    #[serde(rename = "terminatingTLS", skip_serializing_if = "Option::is_none")]
    pub terminating_tls: Option<Value>,
}

/// A `toPorts` entry of a deny rule: ports only (deny rules have no L7 rules).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortDenyRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortProtocol>>,
}

/// A port (or range) and protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortProtocol {
    /// A number `"0"`..=`"65535"` (`"0"` = every port) or a port name, always a string (as the
    /// CRD says). Named ports are reported unsupported. Left out, it is `"0"`: every port (the
    /// CRD does not require it, and the port-less protocols are written without it).
    #[serde(default = "every_port", deserialize_with = "port_string")]
    pub port: String,
    /// Last port of a range `port..=endPort`. Cilium treats `0` as absent, and so does the parser
    /// (it becomes `None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
    /// Absent means any protocol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

impl PortProtocol {
    /// The port number, when the port is numeric.
    pub fn number(&self) -> Option<u16> {
        if self.port.bytes().all(|b| b.is_ascii_digit()) {
            self.port.parse().ok()
        } else {
            None
        }
    }
}

fn every_port() -> String {
    "0".to_owned()
}

/// The protocol of a port rule: the CRD's enum. `ANY` is TCP, UDP and SCTP (the protocols with
/// ports); the others have no ports and are matched by protocol number alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Any,
    Vrrp,
    Igmp,
    Gre,
    Ipip,
    /// IPv6 encapsulated in IPv4 (protocol 41), not IPv6 itself.
    Ipv6,
    Esp,
    Ah,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Any => "ANY",
            Protocol::Vrrp => "VRRP",
            Protocol::Igmp => "IGMP",
            Protocol::Gre => "GRE",
            Protocol::Ipip => "IPIP",
            Protocol::Ipv6 => "IPV6",
            Protocol::Esp => "ESP",
            Protocol::Ah => "AH",
        }
    }

    /// The IP protocol numbers the protocol stands for (IANA).
    pub fn numbers(self) -> &'static [u8] {
        match self {
            Protocol::Tcp => &[6],
            Protocol::Udp => &[17],
            Protocol::Sctp => &[132],
            Protocol::Any => &[6, 17, 132],
            Protocol::Vrrp => &[112],
            Protocol::Igmp => &[2],
            Protocol::Gre => &[47],
            Protocol::Ipip => &[4],
            Protocol::Ipv6 => &[41],
            Protocol::Esp => &[50],
            Protocol::Ah => &[51],
        }
    }

    /// Whether the protocol has ports (TCP, UDP, SCTP; `ANY` stands for those three).
    pub fn has_ports(self) -> bool {
        matches!(
            self,
            Protocol::Tcp | Protocol::Udp | Protocol::Sctp | Protocol::Any
        )
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The values the CRD accepts for `protocol`.
pub const PROTOCOLS: &[&str] = &[
    "TCP", "UDP", "SCTP", "ANY", "VRRP", "IGMP", "GRE", "IPIP", "IPV6", "ESP", "AH",
];

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        const ALL: [Protocol; 11] = [
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Sctp,
            Protocol::Any,
            Protocol::Vrrp,
            Protocol::Igmp,
            Protocol::Gre,
            Protocol::Ipip,
            Protocol::Ipv6,
            Protocol::Esp,
            Protocol::Ah,
        ];
        if let Some(p) = ALL.into_iter().find(|p| p.as_str() == s) {
            return Ok(p);
        }
        match s.as_str() {
            // Not in the CRD's enum: Cilium matches ICMP with `icmps`, never in `toPorts`.
            "ICMP" | "ICMPV6" | "ICMPv6" => Err(de::Error::custom(format!(
                "protocol `{s}` is not valid in `toPorts` (Cilium matches ICMP with an `icmps` rule, not with ports)"
            ))),
            _ => Err(de::Error::unknown_variant(&s, PROTOCOLS)),
        }
    }
}

/// A port, which the CRD declares a string: `port: "80"` or `port: http`. A YAML number
/// (`port: 80`) is refused, as the API server refuses it; decoding repairs it to the string so
/// the rest of the document is still checked, and the hint says to quote it.
fn port_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct PortVisitor;
    impl Visitor<'_> for PortVisitor {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Err(E::invalid_type(de::Unexpected::Unsigned(v), &self))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Err(E::invalid_type(de::Unexpected::Signed(v), &self))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
    }
    d.deserialize_any(PortVisitor)
}

/// Layer-7 rules of a `toPorts` entry; at most one kind per entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L7Rules {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<HttpRule>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<Vec<Value>>,
    /// Unsupported (and egress only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Vec<FqdnSelector>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7proto: Option<String>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7: Option<Vec<BTreeMap<String, String>>>,
}

/// One HTTP rule: a request is allowed if it matches every field given. `method`, `path` and
/// `host` are regular expressions matched against the whole string.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `"Name"` (present) or `"Name: value"` (equal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
    /// Unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_matches: Option<Vec<Value>>,
}
