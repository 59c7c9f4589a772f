//! Gateway API durations (GEP-2257): one to four parts, each one to five digits and a
//! unit of `h`, `m`, `s` or `ms`, such as `10s`, `500ms` or `1h30m`.

use std::fmt;
use std::time::Duration as StdDuration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration in the Gateway API's spelling. Displays in canonical form (`90m` is
/// `1h30m`, zero is `0s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(StdDuration);

/// Largest number of hours a duration may hold, so that it prints back in the
/// Gateway API's five-digit form.
const MAX_HOURS: u64 = 99_999;

impl Duration {
    /// Zero, which Gateway API timeouts read as "no timeout".
    pub const ZERO: Duration = Duration(StdDuration::ZERO);

    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(StdDuration::from_millis(ms))
    }

    /// A duration of `s` seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(StdDuration::from_secs(s))
    }

    /// The duration as a `std::time::Duration`.
    pub fn get(self) -> StdDuration {
        self.0
    }

    /// Whether the duration is zero.
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for StdDuration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: expected up to four parts of 1 to 5 digits with a unit \
     (h, m, s, ms), e.g. \"10s\", \"500ms\" or \"1h30m\""
)]
pub struct ParseDurationError {
    input: String,
}

impl std::str::FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDurationError {
            input: s.to_string(),
        };
        let mut rest = s;
        let mut total_ms: u64 = 0;
        let mut parts = 0;
        while !rest.is_empty() {
            parts += 1;
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
            if digits == 0 || digits > 5 || parts > 4 {
                return Err(err());
            }
            let value: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            let (scale, unit_len) = if rest.starts_with("ms") {
                (1, 2)
            } else if rest.starts_with('h') {
                (3_600_000, 1)
            } else if rest.starts_with('m') {
                (60_000, 1)
            } else if rest.starts_with('s') {
                (1_000, 1)
            } else {
                return Err(err());
            };
            rest = &rest[unit_len..];
            total_ms += value * scale;
        }
        if parts == 0 || total_ms / 3_600_000 > MAX_HOURS {
            return Err(err());
        }
        Ok(Self::from_millis(total_ms))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let parts = [
            (ms / 3_600_000, "h"),
            (ms / 60_000 % 60, "m"),
            (ms / 1000 % 60, "s"),
            (ms % 1000, "ms"),
        ];
        for (value, unit) in parts {
            if value != 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"10s\", \"500ms\" or \"1h30m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(DurationVisitor)
    }
}

/// The Gateway API's own pattern for a duration (GEP-2257). It admits exactly what
/// [`Duration::from_str`](std::str::FromStr) reads except a total past 99999 hours
/// (`99999h99999m`), which only the parse refuses.
pub const PATTERN: &str = "^([0-9]{1,5}(h|m|s|ms)){1,4}$";

/// A string of the Gateway API's form, as the custom resource definitions carry it.
#[cfg(feature = "schemars")]
impl schemars::JsonSchema for Duration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations the Gateway API accepts, and their length in milliseconds.
    const VALID: [(&str, u64); 9] = [
        ("10s", 10_000),
        ("500ms", 500),
        ("1h30m", 5_400_000),
        ("1h", 3_600_000),
        ("0s", 0),
        ("1m1s1ms", 61_001),
        ("1h1m1s1ms", 3_661_001),
        ("99999ms", 99_999),
        ("2s500ms", 2_500),
    ];

    /// Strings the Gateway API refuses as durations.
    const INVALID: [&str; 13] = [
        "",
        "10",
        "s",
        "1.5s",
        "-1s",
        "1d",
        "100000s",
        "1h1m1s1ms1h",
        "1 s",
        " 1s",
        "1S",
        "ms",
        "1sm",
    ];

    #[test]
    fn parses_gateway_api_durations() {
        for (input, ms) in VALID {
            assert_eq!(
                input.parse::<Duration>(),
                Ok(Duration::from_millis(ms)),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_what_the_gateway_api_refuses() {
        for input in INVALID {
            assert!(input.parse::<Duration>().is_err(), "{input:?} parsed");
        }
    }

    #[test]
    fn pattern_admits_what_parses() {
        let pattern = regex::Regex::new(PATTERN).expect("the pattern compiles");
        let inputs = VALID.iter().map(|(input, _)| *input).chain(INVALID);
        for input in inputs {
            assert_eq!(
                pattern.is_match(input),
                input.parse::<Duration>().is_ok(),
                "{input:?}"
            );
        }
        assert!(pattern.is_match("99999h99999m") && "99999h99999m".parse::<Duration>().is_err());
    }

    #[test]
    fn displays_canonically_and_round_trips() {
        let cases = [
            ("90m", "1h30m"),
            ("0s", "0s"),
            ("0h", "0s"),
            ("1500ms", "1s500ms"),
            ("10s", "10s"),
            ("99999h", "99999h"),
        ];
        for (input, want) in cases {
            let d: Duration = input.parse().expect("valid");
            assert_eq!(d.to_string(), want);
            assert_eq!(want.parse::<Duration>(), Ok(d));
        }
    }
}
