//! Times as RFC 3339 text in UTC with nanoseconds (`2026-11-21T10:00:00.123456789Z`), the way
//! Hubble writes them.

/// `#[serde(with = "rfc3339")]` for a `SystemTime`; [`rfc3339::option`] for an
/// `Option<SystemTime>`.
pub mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn format(t: SystemTime) -> String {
        humantime::format_rfc3339_nanos(t).to_string()
    }

    pub fn parse(s: &str) -> Result<SystemTime, String> {
        humantime::parse_rfc3339_weak(s).map_err(|e| {
            format!("{s:?} is not an RFC 3339 time ({e}); write it like 2026-11-21T10:00:00Z")
        })
    }

    pub fn now() -> String {
        format(SystemTime::now())
    }

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_nanos(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(D::Error::custom)
    }

    pub mod option {
        use std::time::SystemTime;

        use serde::{Deserialize, Deserializer, Serializer, de::Error};

        pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| super::parse(&s).map_err(D::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::rfc3339;

    #[test]
    fn formats_and_parses_with_nanoseconds() {
        assert_eq!(
            rfc3339::format(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_795_219_200_000_000_042);
        assert_eq!(rfc3339::format(t), "2026-11-21T00:00:00.000000042Z");
        assert_eq!(rfc3339::parse("2026-11-21T00:00:00.000000042Z"), Ok(t));
        assert!(rfc3339::parse("yesterday").is_err());
    }
}
