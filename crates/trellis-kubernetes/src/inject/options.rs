//! The `trellis.dev/*` annotations a Pod sets to change its injection, read once into
//! [`PodOptions`]. A value that means nothing is an error naming the annotation, the
//! value and what would be accepted: the Pod's author made a mistake, and a webhook
//! refuses the Pod rather than inject something else than was asked.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{InjectSettings, ProxyResources};

/// Inbound ports the capture rules leave alone: `22,8081`.
pub const EXCLUDE_INBOUND_PORTS: &str = "trellis.dev/exclude-inbound-ports";
/// Outbound destination ports the capture rules leave alone: `5432`.
pub const EXCLUDE_OUTBOUND_PORTS: &str = "trellis.dev/exclude-outbound-ports";
/// Outbound destinations the capture rules leave alone: `10.0.0.0/8,fd00::/8`.
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "trellis.dev/exclude-outbound-ip-ranges";
/// The proxy's CPU request: `100m`.
pub const PROXY_CPU: &str = "trellis.dev/proxy-cpu";
/// The proxy's memory request: `64Mi`.
pub const PROXY_MEMORY: &str = "trellis.dev/proxy-memory";
/// The proxy's CPU limit.
pub const PROXY_CPU_LIMIT: &str = "trellis.dev/proxy-cpu-limit";
/// The proxy's memory limit.
pub const PROXY_MEMORY_LIMIT: &str = "trellis.dev/proxy-memory-limit";
/// The proxy's log filter: `debug`, `trellis_proxy=trace`.
pub const PROXY_LOG_LEVEL: &str = "trellis.dev/proxy-log-level";

/// One Pod's injection settings: the annotations over the injector's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOptions {
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    /// Address blocks as `ADDR/LEN`, checked.
    pub exclude_outbound_ip_ranges: Vec<String>,
    pub resources: ProxyResources,
    pub log_level: String,
}

/// An annotation whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {value:?} {problem}")]
pub struct AnnotationError {
    pub annotation: &'static str,
    pub value: String,
    /// What is wrong and what would be accepted.
    pub problem: String,
}

impl PodOptions {
    /// Reads the annotations, with `settings` for what they do not set.
    pub fn from_annotations(
        annotations: Option<&BTreeMap<String, String>>,
        settings: &InjectSettings,
    ) -> Result<Self, AnnotationError> {
        let get = |key: &str| annotations.and_then(|a| a.get(key)).map(|v| v.trim());
        let ports = |key: &'static str| get(key).map_or(Ok(Vec::new()), |v| parse_ports(key, v));
        let quantity = |key: &'static str, default: &Option<String>| match get(key) {
            Some(value) => parse_quantity(key, value).map(Some),
            None => Ok(default.clone()),
        };
        // A limit the Pod sets without a request drops the default request: Kubernetes
        // then makes the request the limit, and a limit below the default request
        // (which the API server would refuse) is what the author meant.
        let request_default = |limit_key: &str, default: &Option<String>| match get(limit_key) {
            Some(_) => None,
            None => default.clone(),
        };
        let defaults = ProxyResources {
            cpu_request: request_default(PROXY_CPU_LIMIT, &settings.resources.cpu_request),
            memory_request: request_default(PROXY_MEMORY_LIMIT, &settings.resources.memory_request),
            ..settings.resources.clone()
        };
        let log_level = match get(PROXY_LOG_LEVEL) {
            Some("") => {
                return Err(AnnotationError {
                    annotation: PROXY_LOG_LEVEL,
                    value: String::new(),
                    problem: "is empty: expected a level such as info or debug".to_owned(),
                })
            }
            Some(level) => level.to_owned(),
            None => settings.log_level.clone(),
        };
        Ok(Self {
            exclude_inbound_ports: ports(EXCLUDE_INBOUND_PORTS)?,
            exclude_outbound_ports: ports(EXCLUDE_OUTBOUND_PORTS)?,
            exclude_outbound_ip_ranges: get(EXCLUDE_OUTBOUND_IP_RANGES)
                .map_or(Ok(Vec::new()), parse_ranges)?,
            resources: ProxyResources {
                cpu_request: quantity(PROXY_CPU, &defaults.cpu_request)?,
                memory_request: quantity(PROXY_MEMORY, &defaults.memory_request)?,
                cpu_limit: quantity(PROXY_CPU_LIMIT, &defaults.cpu_limit)?,
                memory_limit: quantity(PROXY_MEMORY_LIMIT, &defaults.memory_limit)?,
            },
            log_level,
        })
    }
}

/// The comma-separated items of a list annotation, blanks dropped.
fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_ports(annotation: &'static str, value: &str) -> Result<Vec<u16>, AnnotationError> {
    items(value)
        .map(|item| {
            item.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| AnnotationError {
                    annotation,
                    value: value.to_owned(),
                    problem: format!(
                        "has {item:?}: expected comma-separated ports from 1 to 65535"
                    ),
                })
        })
        .collect()
}

fn parse_ranges(value: &str) -> Result<Vec<String>, AnnotationError> {
    items(value)
        .map(|item| {
            let (addr, len) = item.split_once('/').unwrap_or((item, ""));
            let max = match addr.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => Some(32),
                Ok(IpAddr::V6(_)) => Some(128),
                Err(_) => None,
            };
            let fits = |max: u8| len.is_empty() || len.parse::<u8>().is_ok_and(|l| l <= max);
            match max {
                Some(max) if fits(max) => Ok(item.to_owned()),
                _ => Err(AnnotationError {
                    annotation: EXCLUDE_OUTBOUND_IP_RANGES,
                    value: value.to_owned(),
                    problem: format!(
                        "has {item:?}: expected comma-separated ADDRESS/LENGTH blocks such as 10.0.0.0/8"
                    ),
                }),
            }
        })
        .collect()
}

/// Checks the shape of a Kubernetes quantity (`250m`, `1.5`, `128Mi`, `1e3`): a
/// decimal number and at most one suffix. The API server checks the rest.
fn parse_quantity(annotation: &'static str, value: &str) -> Result<String, AnnotationError> {
    const SUFFIXES: [&str; 14] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P",
    ];
    let number_end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(number_end);
    let number_ok = !number.is_empty()
        && number != "."
        && number.matches('.').count() <= 1
        && number.parse::<f64>().is_ok_and(|n| n > 0.0);
    let exponent_ok = |s: &str| {
        s.strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
    };
    let suffix_ok =
        suffix.is_empty() || suffix == "E" || SUFFIXES.contains(&suffix) || exponent_ok(suffix);
    if number_ok && suffix_ok {
        Ok(value.to_owned())
    } else {
        Err(AnnotationError {
            annotation,
            value: value.to_owned(),
            problem: "is not a positive Kubernetes quantity such as 250m, 1, 128Mi or 1Gi"
                .to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<PodOptions, AnnotationError> {
        let map = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        PodOptions::from_annotations(Some(&map), &InjectSettings::new())
    }

    #[test]
    fn no_annotations_give_the_defaults() {
        let options = PodOptions::from_annotations(None, &InjectSettings::new()).expect("reads");
        assert_eq!(options.resources, ProxyResources::default());
        assert_eq!(options.log_level, "info");
        assert!(options.exclude_inbound_ports.is_empty());
        assert!(options.exclude_outbound_ip_ranges.is_empty());
    }

    #[test]
    fn each_annotation_is_read() {
        let options = read(&[
            (EXCLUDE_INBOUND_PORTS, "22, 8081"),
            (EXCLUDE_OUTBOUND_PORTS, "5432"),
            (
                EXCLUDE_OUTBOUND_IP_RANGES,
                "10.0.0.0/8,fd00::/8,192.168.1.1",
            ),
            (PROXY_CPU, "250m"),
            (PROXY_MEMORY, "128Mi"),
            (PROXY_CPU_LIMIT, "1"),
            (PROXY_MEMORY_LIMIT, "1Gi"),
            (PROXY_LOG_LEVEL, "trellis_proxy=debug"),
        ])
        .expect("reads");
        assert_eq!(options.exclude_inbound_ports, [22, 8081]);
        assert_eq!(options.exclude_outbound_ports, [5432]);
        assert_eq!(
            options.exclude_outbound_ip_ranges,
            ["10.0.0.0/8", "fd00::/8", "192.168.1.1"]
        );
        assert_eq!(
            options.resources,
            ProxyResources {
                cpu_request: Some("250m".into()),
                memory_request: Some("128Mi".into()),
                cpu_limit: Some("1".into()),
                memory_limit: Some("1Gi".into()),
            }
        );
        assert_eq!(options.log_level, "trellis_proxy=debug");
    }

    #[test]
    fn a_limit_alone_drops_the_default_request() {
        let options = read(&[(PROXY_MEMORY_LIMIT, "32Mi")]).expect("reads");
        assert_eq!(
            options.resources,
            ProxyResources {
                cpu_request: Some("100m".into()),
                memory_request: None,
                cpu_limit: None,
                memory_limit: Some("32Mi".into()),
            }
        );
        let both = read(&[(PROXY_CPU_LIMIT, "1"), (PROXY_CPU, "200m")]).expect("reads");
        assert_eq!(both.resources.cpu_request.as_deref(), Some("200m"));
    }

    #[test]
    fn bad_values_name_the_annotation() {
        let cases = [
            (EXCLUDE_INBOUND_PORTS, "22,ssh"),
            (EXCLUDE_INBOUND_PORTS, "0"),
            (EXCLUDE_OUTBOUND_PORTS, "70000"),
            (EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33"),
            (EXCLUDE_OUTBOUND_IP_RANGES, "intranet"),
            (PROXY_CPU, "lots"),
            (PROXY_MEMORY, "64MB"),
            (PROXY_MEMORY_LIMIT, "-1Gi"),
            (PROXY_CPU_LIMIT, "1.2.3"),
            (PROXY_LOG_LEVEL, " "),
        ];
        for (annotation, value) in cases {
            let err = read(&[(annotation, value)]).expect_err(value);
            assert_eq!(err.annotation, annotation, "{value}");
            assert!(err.to_string().contains(annotation), "{err}");
        }
    }

    #[test]
    fn quantities_in_kubernetes_forms_are_accepted() {
        for q in ["1", "0.5", "250m", "128Mi", "1Gi", "1e3", "2E", "1k", ".5"] {
            assert_eq!(parse_quantity(PROXY_CPU, q), Ok(q.to_owned()), "{q}");
        }
    }
}
