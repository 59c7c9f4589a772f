//! Human-readable durations in configuration files: `250ms`, `1s`, `1.5s`, `2m`, `1h`.

use std::fmt;
use std::time::Duration as StdDuration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written with a unit suffix (`ms`, `s`, `m`, `h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(StdDuration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> Self {
        Self(StdDuration::from_secs(s))
    }

    pub fn get(self) -> StdDuration {
        self.0
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected a number with a unit (ms, s, m, h), e.g. \"250ms\" or \"1.5s\"")]
pub struct ParseDurationError {
    input: String,
}

impl std::str::FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDurationError {
            input: s.to_string(),
        };
        let trimmed = s.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (number, unit) = trimmed.split_at(split);
        let value: f64 = number.parse().map_err(|_| err())?;
        let scale = match unit.trim() {
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        let secs = value * scale;
        if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
            return Err(err());
        }
        Ok(Self(StdDuration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) || ms == 0 {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
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
                f.write_str("a duration such as \"250ms\", \"1s\" or \"2m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let cases = [
            ("250ms", StdDuration::from_millis(250)),
            ("1s", StdDuration::from_secs(1)),
            ("1.5s", StdDuration::from_millis(1500)),
            ("2m", StdDuration::from_secs(120)),
            ("1h", StdDuration::from_secs(3600)),
            ("0s", StdDuration::ZERO),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Duration>(), Ok(Duration(want)), "{input}");
        }
    }

    #[test]
    fn refuses_garbage() {
        for input in ["", "10", "s", "1x", "-1s", "1..2s", "ms"] {
            assert!(input.parse::<Duration>().is_err(), "{input} parsed");
        }
    }

    #[test]
    fn displays_round_trip() {
        for input in ["250ms", "1s", "1500ms", "120s"] {
            let d: Duration = input.parse().expect("valid");
            assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
        }
    }
}
