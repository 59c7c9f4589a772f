//! What every resource carries besides its spec: Kubernetes object metadata, and a
//! status made of conditions in the Gateway API's shape.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Namespace of a namespaced object that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Condition type: the resource is valid and its controller acts on it.
pub const ACCEPTED: &str = "Accepted";
/// Condition type: every object the resource refers to exists.
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// Condition type: a workload is healthy and takes traffic.
pub const READY: &str = "Ready";

/// Kubernetes object metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// Name, unique per kind and namespace: a DNS-1123 label (lowercase letters,
    /// digits and '-', at most 63 characters).
    pub name: String,
    /// Namespace. Default `default`; empty for cluster-wide kinds (`MeshConfig`).
    #[serde(
        default = "default_namespace",
        skip_serializing_if = "String::is_empty"
    )]
    pub namespace: String,
    /// Labels that selectors match on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form notes for tools and people.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Store revision of the last write to this object, as a decimal string; set by the
    /// store, used for compare-and-swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Incremented by the store on every change to the spec; conditions record which
    /// generation they describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// When the store first saw the object, RFC 3339 in UTC (`2026-11-05T10:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

pub(crate) fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

impl ObjectMeta {
    /// Metadata with a name and namespace and nothing else.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            ..Self::default()
        }
    }
}

/// The observed state of a resource, written by the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Status {
    /// Latest observations, at most one per condition type.
    #[serde(default)]
    // A map keyed by type, so that server-side apply merges one writer's conditions
    // with another's instead of replacing the list.
    #[cfg_attr(
        feature = "schemars",
        schemars(extend(
            "x-kubernetes-list-type" = "map",
            "x-kubernetes-list-map-keys" = ["type"]
        ))
    )]
    pub conditions: Vec<Condition>,
    /// A Service's stable virtual IP, which mesh DNS answers for its names and
    /// transparent sidecars route by. Unset for other kinds, and until assigned.
    #[serde(default, rename = "virtualIP", skip_serializing_if = "Option::is_none")]
    pub virtual_ip: Option<std::net::IpAddr>,
    /// An ExternalService's hosts and their virtual IPs, which mesh DNS answers for
    /// them. Empty for other kinds, and until assigned.
    #[serde(
        default,
        rename = "virtualIPs",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub virtual_ips: BTreeMap<String, std::net::IpAddr>,
}

impl Status {
    /// The condition of the given type, if any.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Records `condition`, replacing any of the same type. When the status (`True`,
    /// `False`, `Unknown`) did not change, the previous `lastTransitionTime` is kept, as
    /// Kubernetes does. Returns whether anything changed.
    pub fn set_condition(&mut self, mut condition: Condition) -> bool {
        match self
            .conditions
            .iter_mut()
            .find(|c| c.type_ == condition.type_)
        {
            Some(existing) => {
                if existing.status == condition.status {
                    condition
                        .last_transition_time
                        .clone_from(&existing.last_transition_time);
                }
                let changed = *existing != condition;
                *existing = condition;
                changed
            }
            None => {
                self.conditions.push(condition);
                true
            }
        }
    }
}

/// One observation about a resource, as in Kubernetes `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// What is observed (`Accepted`, `ResolvedRefs`, `Ready`).
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// A CamelCase word for programs (`BackendNotFound`).
    #[serde(default)]
    pub reason: String,
    /// A sentence for people.
    #[serde(default)]
    pub message: String,
    /// The `metadata.generation` the observation was made on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<u64>,
    /// When `status` last changed, RFC 3339 in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// Whether a condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

impl Condition {
    /// A condition observed now on no particular generation; see
    /// [`Condition::observed_at`] to record the generation.
    pub fn new(
        type_: impl Into<String>,
        status: ConditionStatus,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            observed_generation: None,
            last_transition_time: Some(rfc3339(SystemTime::now())),
        }
    }

    /// `Accepted=True`, reason `Accepted`.
    pub fn accepted() -> Self {
        Self::new(ACCEPTED, ConditionStatus::True, "Accepted", "")
    }

    /// `Accepted=False` with a reason such as `UnsupportedValue` or `NoMatchingParent`.
    pub fn not_accepted(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ACCEPTED, ConditionStatus::False, reason, message)
    }

    /// `ResolvedRefs=True` when `missing` is empty; otherwise `ResolvedRefs=False`,
    /// reason `BackendNotFound`, naming what is missing.
    pub fn resolved_refs(missing: &[crate::ObjectRef]) -> Self {
        Self::resolved_refs_because(missing, "BackendNotFound")
    }

    /// [`Condition::resolved_refs`] with the reason given for missing objects
    /// (`TargetNotFound` for a policy's target).
    pub fn resolved_refs_because(missing: &[crate::ObjectRef], reason: &str) -> Self {
        if missing.is_empty() {
            return Self::new(RESOLVED_REFS, ConditionStatus::True, "ResolvedRefs", "");
        }
        let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
        Self::new(
            RESOLVED_REFS,
            ConditionStatus::False,
            reason,
            format!("not found: {}", names.join(", ")),
        )
    }

    /// `Ready=True` or `Ready=False` for a workload, with a reason.
    pub fn ready(ready: bool, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(READY, ready.into(), reason, message)
    }

    /// The same condition, recorded as describing `generation`.
    pub fn observed_at(mut self, generation: Option<u64>) -> Self {
        self.observed_generation = generation;
        self
    }
}

/// Formats a time as RFC 3339 in UTC with second precision (`2026-11-05T10:00:00Z`),
/// the form Kubernetes writes timestamps in.
pub fn rfc3339(t: SystemTime) -> String {
    let (date, time) = utc_fields(t);
    format!("{date}T{time}Z")
}

/// The same with milliseconds (`2026-11-05T10:00:00.042Z`), for logs.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let millis = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0);
    let (date, time) = utc_fields(t);
    format!("{date}T{time}.{millis:03}Z")
}

/// `YYYY-MM-DD` and `hh:mm:ss` of a time in UTC.
fn utc_fields(t: SystemTime) -> (String, String) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60),
    )
}

/// Seconds since the Unix epoch of `2026-11-05T10:00:00Z` (fractions and `±HH:MM`
/// offsets accepted).
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || year < 1970 {
        return None;
    }
    let rest = s.get(19..)?;
    let rest = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset: i64 = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] if rest.len() == 6 => {
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            if *sign == b'+' {
                h * 3600 + m * 60
            } else {
                -(h * 3600 + m * 60)
            }
        }
        _ => return None,
    };
    // Days since the epoch of a Gregorian date (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y % 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    let local = days * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(i64::try_from(local).ok()? - offset).ok()
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Whether `s` is an RFC 3339 timestamp (`2026-11-05T10:00:00Z`,
/// `2026-11-05T10:00:00.5+01:00`).
pub(crate) fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|d| d.parse::<u32>().ok());
    let date_time = digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && matches!(b.get(10), Some(b'T' | b't'))
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19);
    if !date_time
        || !(1..=12).contains(&num(5..7).unwrap_or(0))
        || !(1..=31).contains(&num(8..10).unwrap_or(0))
        || num(11..13).unwrap_or(99) > 23
        || num(14..16).unwrap_or(99) > 59
        || num(17..19).unwrap_or(99) > 60
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_793_873_106, "2026-11-05T10:05:06Z"),
        ];
        for (secs, want) in cases {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(rfc3339(t), want);
            assert!(is_rfc3339(want));
        }
    }

    #[test]
    fn formats_milliseconds() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_042);
        assert_eq!(rfc3339_millis(t), "2023-11-14T22:13:20.042Z");
    }

    #[test]
    fn recognises_rfc3339() {
        for ok in ["2026-11-05T10:00:00Z", "2026-11-05T10:00:00.123+01:00"] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "",
            "2026-11-05",
            "2026-13-05T10:00:00Z",
            "2026-11-05T10:00:00",
            "2026-11-05T10:00:00.Z",
            "2026-11-05 10:00:00Z",
            "2026-11-05T10:00:00+0100",
            "２026-11-05T10:00:00Z",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn set_condition_keeps_transition_time_while_status_holds() {
        let mut status = Status::default();
        let mut first = Condition::accepted();
        first.last_transition_time = Some("2026-01-01T00:00:00Z".into());
        assert!(status.set_condition(first));

        let again = Condition::accepted().observed_at(Some(2));
        assert!(status.set_condition(again));
        let kept = status.condition(ACCEPTED).expect("set");
        assert_eq!(
            kept.last_transition_time.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(kept.observed_generation, Some(2));
        assert!(!status.set_condition(kept.clone()));

        let flipped = Condition::not_accepted("UnsupportedValue", "no");
        let at = flipped.last_transition_time.clone();
        assert!(status.set_condition(flipped));
        let now = status.condition(ACCEPTED).expect("set");
        assert_eq!(now.status, ConditionStatus::False);
        assert_eq!(now.last_transition_time, at);
        assert_eq!(status.conditions.len(), 1);
    }
}
