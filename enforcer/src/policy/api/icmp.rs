//! ICMP types in `icmps` rules: a number (0 to 255) or one of Cilium's names, per family, with
//! the checks the CRD's schema and Cilium's decoding make (`pkg/policy/api/icmp.go`: a name is
//! looked up in its family's table only).
//!
//! Cilium enforces an ICMP type as the "port" of protocol ICMP (`1`) or ICMPv6 (`58`) in its
//! policy key; resolution here does the same, so one LPM lookup per packet still decides.

use serde_json::Value;

use super::IcmpField;
use crate::yaml::suggest;

/// The IP family of an ICMP field: ICMP (`IPv4`, the default) or ICMPv6 (`IPv6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpFamily {
    V4,
    V6,
}

impl IcmpFamily {
    /// `family` as written: absent means `IPv4`; `None` for a value outside the CRD's enum.
    pub fn from_field(family: Option<&str>) -> Option<Self> {
        match family {
            None | Some("IPv4") => Some(IcmpFamily::V4),
            Some("IPv6") => Some(IcmpFamily::V6),
            Some(_) => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IcmpFamily::V4 => "IPv4",
            IcmpFamily::V6 => "IPv6",
        }
    }

    /// The IP protocol number whose "port" the type is.
    pub fn protocol(self) -> u8 {
        match self {
            IcmpFamily::V4 => 1,
            IcmpFamily::V6 => 58,
        }
    }

    /// Cilium's names of this family's types.
    pub fn names(self) -> &'static [(&'static str, u8)] {
        match self {
            IcmpFamily::V4 => ICMPV4_TYPES,
            IcmpFamily::V6 => ICMPV6_TYPES,
        }
    }

    fn other(self) -> Self {
        match self {
            IcmpFamily::V4 => IcmpFamily::V6,
            IcmpFamily::V6 => IcmpFamily::V4,
        }
    }
}

/// The ICMP (IPv4) type names Cilium accepts, as in its `icmpIpv4TypeNameToCode`.
pub const ICMPV4_TYPES: &[(&str, u8)] = &[
    ("EchoReply", 0),
    ("DestinationUnreachable", 3),
    ("Redirect", 5),
    ("Echo", 8),
    ("EchoRequest", 8),
    ("RouterAdvertisement", 9),
    ("RouterSelection", 10),
    ("TimeExceeded", 11),
    ("ParameterProblem", 12),
    ("Timestamp", 13),
    ("TimestampReply", 14),
    ("Photuris", 40),
    ("ExtendedEchoRequest", 42),
    ("ExtendedEchoReply", 43),
];

/// The ICMPv6 type names Cilium accepts, as in its `icmpIpv6TypeNameToCode`.
pub const ICMPV6_TYPES: &[(&str, u8)] = &[
    ("DestinationUnreachable", 1),
    ("PacketTooBig", 2),
    ("TimeExceeded", 3),
    ("ParameterProblem", 4),
    ("EchoRequest", 128),
    ("EchoReply", 129),
    ("MulticastListenerQuery", 130),
    ("MulticastListenerReport", 131),
    ("MulticastListenerDone", 132),
    ("RouterSolicitation", 133),
    ("RouterAdvertisement", 134),
    ("NeighborSolicitation", 135),
    ("NeighborAdvertisement", 136),
    ("RedirectMessage", 137),
    ("RouterRenumbering", 138),
    ("ICMPNodeInformationQuery", 139),
    ("ICMPNodeInformationResponse", 140),
    ("InverseNeighborDiscoverySolicitation", 141),
    ("InverseNeighborDiscoveryAdvertisement", 142),
    ("HomeAgentAddressDiscoveryRequest", 144),
    ("HomeAgentAddressDiscoveryReply", 145),
    ("MobilePrefixSolicitation", 146),
    ("MobilePrefixAdvertisement", 147),
    ("DuplicateAddressRequestCodeSuffix", 157),
    ("DuplicateAddressConfirmationCodeSuffix", 158),
    ("ExtendedEchoRequest", 160),
    ("ExtendedEchoReply", 161),
];

/// The name a flow shows for an ICMP (IPv4) type, as Hubble does (`EchoRequest`, not `Echo`).
pub fn icmpv4_type_name(icmp_type: u8) -> Option<&'static str> {
    ICMPV4_TYPES
        .iter()
        .find(|(name, t)| *t == icmp_type && *name != "Echo")
        .map(|(name, _)| *name)
}

/// Why a `type` cannot be used: the message and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeProblem {
    pub message: String,
    pub hint: Option<String>,
}

fn problem(message: String, hint: impl Into<Option<String>>) -> TypeProblem {
    TypeProblem {
        message,
        hint: hint.into(),
    }
}

/// The type number of `value` in `family`, or why the API server or Cilium refuses it.
pub fn icmp_type(family: IcmpFamily, value: &Value) -> Result<u8, TypeProblem> {
    let range = || {
        problem(
            format!("ICMP type {value} is out of range"),
            "ICMP types are 0 to 255, or a name such as `EchoRequest`".to_owned(),
        )
    };
    match value {
        Value::Number(n) => match n.as_u64() {
            Some(t) if t <= 255 => Ok(t as u8),
            Some(_) => Err(range()),
            None if n.as_i64().is_some() => Err(range()),
            None => Err(problem(
                format!("ICMP type {n} is not a whole number"),
                "write the type number (0 to 255), or a name such as `EchoRequest`".to_owned(),
            )),
        },
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            // The CRD's pattern takes 0..=255 written without leading zeros.
            match s.parse::<u16>() {
                Ok(t) if t <= 255 && (s == "0" || !s.starts_with('0')) => Ok(t as u8),
                Ok(t) if t <= 255 => Err(problem(
                    format!("ICMP type `{s}` has a leading zero, which the CRD's pattern refuses"),
                    format!("write `\"{t}\"`"),
                )),
                _ => Err(range()),
            }
        }
        Value::String(name) => named_type(family, name),
        Value::Null => Err(problem(
            "an ICMP field needs a `type`".to_owned(),
            "write `type: 8` or `type: EchoRequest`".to_owned(),
        )),
        _ => Err(problem(
            format!("ICMP type {value} is neither a number nor a name"),
            "write the type number (0 to 255), or a name such as `EchoRequest`".to_owned(),
        )),
    }
}

fn lookup(family: IcmpFamily, name: &str) -> Option<u8> {
    family
        .names()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
}

fn named_type(family: IcmpFamily, name: &str) -> Result<u8, TypeProblem> {
    let fam = family.as_str();
    // Cilium's table knows `ExtendedEchoReply`, but the CRD's pattern spells it
    // `ExtendedEcho Reply` (a line break in Cilium's source), so the API server refuses the
    // name, and Cilium refuses the spelling the pattern allows: only the number works.
    if name == "ExtendedEchoReply" || name == "ExtendedEcho Reply" {
        let number = lookup(family, "ExtendedEchoReply").unwrap_or_default();
        return Err(problem(
            format!(
                "ICMP type `{name}` cannot be written by name: the CRD's pattern refuses `ExtendedEchoReply` and Cilium refuses `ExtendedEcho Reply`"
            ),
            format!("write the number for {fam}: `type: {number}`"),
        ));
    }
    if let Some(t) = lookup(family, name) {
        return Ok(t);
    }
    let other = family.other();
    let hint = if let Some(t) = lookup(other, name) {
        let closest = suggest(name, family.names().iter().map(|(n, _)| *n))
            .map(|s| format!(", or the {fam} type `{s}`"))
            .unwrap_or_default();
        format!(
            "`{name}` is an {} type ({t}): write `family: {}`{closest}",
            if other == IcmpFamily::V6 {
                "ICMPv6"
            } else {
                "ICMP (IPv4)"
            },
            other.as_str()
        )
    } else if let Some(s) = suggest(name, family.names().iter().map(|(n, _)| *n)) {
        format!("did you mean `{s}`?")
    } else {
        let mut names: Vec<&str> = family.names().iter().map(|(n, _)| *n).collect();
        names.dedup();
        format!(
            "{fam} type names: {}; or write the number",
            names.join(", ")
        )
    };
    Err(problem(
        format!("ICMP type `{name}` is not a type name of {fam}"),
        hint,
    ))
}

impl IcmpField {
    /// The family and type number, when the field is valid.
    pub fn resolve(&self) -> Option<(IcmpFamily, u8)> {
        let family = IcmpFamily::from_field(self.family.as_deref())?;
        Some((family, icmp_type(family, &self.icmp_type).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_and_names_per_family() {
        use IcmpFamily::*;
        assert_eq!(icmp_type(V4, &json!(8)), Ok(8));
        assert_eq!(icmp_type(V4, &json!("8")), Ok(8));
        assert_eq!(icmp_type(V4, &json!(0)), Ok(0));
        assert_eq!(icmp_type(V4, &json!("0")), Ok(0));
        assert_eq!(icmp_type(V4, &json!(255)), Ok(255));
        assert_eq!(icmp_type(V4, &json!("EchoRequest")), Ok(8));
        assert_eq!(icmp_type(V4, &json!("Echo")), Ok(8));
        assert_eq!(icmp_type(V4, &json!("EchoReply")), Ok(0));
        assert_eq!(icmp_type(V4, &json!("DestinationUnreachable")), Ok(3));
        assert_eq!(icmp_type(V4, &json!("ExtendedEchoRequest")), Ok(42));
        assert_eq!(icmp_type(V6, &json!("EchoRequest")), Ok(128));
        assert_eq!(icmp_type(V6, &json!("DestinationUnreachable")), Ok(1));
        assert_eq!(icmp_type(V6, &json!("NeighborSolicitation")), Ok(135));
        assert_eq!(icmp_type(V6, &json!(128)), Ok(128));
    }

    #[test]
    fn refusals_say_why_and_what_to_write() {
        use IcmpFamily::*;
        let e = icmp_type(V4, &json!(256)).unwrap_err();
        assert_eq!(e.message, "ICMP type 256 is out of range");
        assert!(icmp_type(V4, &json!(-1)).is_err());
        assert!(icmp_type(V4, &json!("256")).is_err());
        assert!(icmp_type(V4, &json!(8.5)).is_err());
        assert!(icmp_type(V4, &json!(true)).is_err());
        let e = icmp_type(V4, &json!("08")).unwrap_err();
        assert_eq!(e.hint.as_deref(), Some("write `\"8\"`"));
        // A misspelt name: the closest of the family.
        let e = icmp_type(V4, &json!("EchoRequst")).unwrap_err();
        assert_eq!(
            e.message,
            "ICMP type `EchoRequst` is not a type name of IPv4"
        );
        assert_eq!(e.hint.as_deref(), Some("did you mean `EchoRequest`?"));
        assert_eq!(
            icmp_type(V4, &json!("echoreply"))
                .unwrap_err()
                .hint
                .as_deref(),
            Some("did you mean `EchoReply`?")
        );
        // A name of the other family (Cilium looks names up in the field's family only).
        let e = icmp_type(V4, &json!("PacketTooBig")).unwrap_err();
        assert_eq!(
            e.hint.as_deref(),
            Some("`PacketTooBig` is an ICMPv6 type (2): write `family: IPv6`")
        );
        let e = icmp_type(V6, &json!("Redirect")).unwrap_err();
        assert_eq!(
            e.hint.as_deref(),
            Some(
                "`Redirect` is an ICMP (IPv4) type (5): write `family: IPv4`, or the IPv6 type `RedirectMessage`"
            )
        );
        // The CRD's pattern and Cilium's table disagree on this one: only the number works.
        let e = icmp_type(V6, &json!("ExtendedEchoReply")).unwrap_err();
        assert_eq!(
            e.hint.as_deref(),
            Some("write the number for IPv6: `type: 161`")
        );
        assert!(icmp_type(V4, &json!("ExtendedEcho Reply")).is_err());
        let e = icmp_type(V4, &json!("Ping")).unwrap_err();
        assert!(
            e.hint
                .as_deref()
                .unwrap()
                .starts_with("IPv4 type names: EchoReply,"),
            "{e:?}"
        );
    }

    #[test]
    fn flows_name_types_as_hubble_does() {
        assert_eq!(icmpv4_type_name(8), Some("EchoRequest"));
        assert_eq!(icmpv4_type_name(0), Some("EchoReply"));
        assert_eq!(icmpv4_type_name(3), Some("DestinationUnreachable"));
        assert_eq!(icmpv4_type_name(7), None);
    }
}
