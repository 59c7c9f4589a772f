//! The tables `trellis get` and `trellis describe` print: a few columns per kind that
//! answer the usual question about it, read from the API's JSON.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use trellis_api::Kind;

use super::Target;

/// Shown for a column with nothing in it.
const NONE: &str = "<none>";

/// One table of `items`, all of `target`'s kind.
pub(super) fn render(target: Target, items: &[Value]) -> String {
    let now = now_secs();
    let (headers, rows): (&[&str], Vec<Vec<String>>) = match target {
        Target::Proxies => (
            &[
                "WORKLOAD",
                "NAMESPACE",
                "SERVICE",
                "ADDRESS",
                "VERSION",
                "CONFIG",
                "STATE",
                "IDENTITY",
                "CERT",
                "ERROR",
                "AGE",
            ],
            items.iter().map(|p| proxy_row(p, now)).collect(),
        ),
        Target::Kind(kind) => {
            let headers = headers(kind);
            let rows = items
                .iter()
                .map(|r| {
                    let mut row = vec![text(&r["metadata"]["name"])];
                    if kind.is_namespaced() {
                        row.push(text(&r["metadata"]["namespace"]));
                    }
                    row.extend(kind_columns(kind, r));
                    row.push(age(&r["metadata"]["creationTimestamp"], now));
                    row
                })
                .collect();
            (headers, rows)
        }
    };
    align(headers, &rows)
}

/// The `Conditions:` section of `describe`.
pub(super) fn conditions(conditions: &[Value]) -> String {
    let rows: Vec<Vec<String>> = conditions
        .iter()
        .map(|c| {
            ["type", "status", "reason", "message"]
                .iter()
                .map(|k| c[*k].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .collect();
    let table = align(&["TYPE", "STATUS", "REASON", "MESSAGE"], &rows);
    let indented: String = table.lines().map(|l| format!("  {l}\n")).collect();
    format!("\nConditions:\n{indented}")
}

fn headers(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Service => &[
            "NAME",
            "NAMESPACE",
            "SELECTOR",
            "PORTS",
            "VIRTUAL-IP",
            "AGE",
        ],
        Kind::Workload => &["NAME", "NAMESPACE", "ADDRESS", "LABELS", "PORTS", "AGE"],
        Kind::HTTPRoute | Kind::GRPCRoute | Kind::TCPRoute | Kind::TLSRoute => &[
            "NAME",
            "NAMESPACE",
            "PARENTS",
            "BACKENDS",
            "RESOLVED",
            "AGE",
        ],
        Kind::BackendPolicy => &["NAME", "NAMESPACE", "TARGET", "RESOLVED", "AGE"],
        Kind::AuthorizationPolicy => &[
            "NAME",
            "NAMESPACE",
            "TARGET",
            "ACTION",
            "RULES",
            "RESOLVED",
            "AGE",
        ],
        Kind::FaultInjection => &[
            "NAME",
            "NAMESPACE",
            "TARGET",
            "DELAY",
            "ABORT",
            "RESOLVED",
            "AGE",
        ],
        Kind::RateLimitPolicy => &["NAME", "NAMESPACE", "TARGET", "LIMITS", "RESOLVED", "AGE"],
        Kind::ExternalService => &[
            "NAME",
            "NAMESPACE",
            "HOSTS",
            "PORTS",
            "RESOLUTION",
            "VIRTUAL-IPS",
            "AGE",
        ],
        Kind::MeshConfig => &["NAME", "TRUST DOMAIN", "MTLS", "DEFAULT AUTHZ", "AGE"],
    }
}

/// The columns between NAMESPACE and AGE.
fn kind_columns(kind: Kind, r: &Value) -> Vec<String> {
    let spec = &r["spec"];
    match kind {
        Kind::Service => vec![
            labels(&spec["selector"]),
            ports(&spec["ports"]),
            text(&r["status"]["virtualIP"]),
        ],
        Kind::Workload => vec![
            text(&spec["address"]),
            labels(&r["metadata"]["labels"]),
            ports(&spec["ports"]),
        ],
        Kind::HTTPRoute | Kind::GRPCRoute | Kind::TCPRoute | Kind::TLSRoute => {
            let parents = names(spec["parentRefs"].as_array().into_iter().flatten());
            let backends = spec["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|rule| rule["backendRefs"].as_array().into_iter().flatten());
            vec![parents, names(backends), condition(r, "ResolvedRefs")]
        }
        Kind::BackendPolicy => vec![target(spec), condition(r, "ResolvedRefs")],
        Kind::AuthorizationPolicy => {
            let rules = spec["rules"].as_array().map_or(0, Vec::len);
            vec![
                target(spec),
                text(&spec["action"]),
                rules.to_string(),
                condition(r, "ResolvedRefs"),
            ]
        }
        Kind::FaultInjection => {
            let delay = &spec["delay"];
            let delay = match delay["fixed"].as_str() {
                Some(fixed) => format!("{fixed} {}%", delay["percent"].as_u64().unwrap_or(100)),
                None => "-".into(),
            };
            let abort = &spec["abort"];
            let status = match (abort["httpStatus"].as_u64(), abort["grpcStatus"].as_u64()) {
                (Some(http), _) => Some(http.to_string()),
                (None, Some(grpc)) => Some(format!("grpc {grpc}")),
                (None, None) => None,
            };
            let abort = match status {
                Some(s) => format!("{s} {}%", abort["percent"].as_u64().unwrap_or(100)),
                None => "-".into(),
            };
            vec![target(spec), delay, abort, condition(r, "ResolvedRefs")]
        }
        Kind::RateLimitPolicy => {
            // Global limits are marked: their rate is the whole Service's.
            let limits: Vec<String> = [("local", ""), ("global", "global ")]
                .into_iter()
                .flat_map(|(field, mark)| {
                    spec[field].as_array().into_iter().flatten().map(move |l| {
                        let per = l["per"].as_str().unwrap_or("service");
                        format!("{mark}{}/s per {per}", l["requestsPerSecond"])
                    })
                })
                .collect();
            vec![
                target(spec),
                limits.join(", "),
                condition(r, "ResolvedRefs"),
            ]
        }
        Kind::ExternalService => {
            let hosts: Vec<&str> = spec["hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let protocol = p["protocol"].as_str().unwrap_or("tls");
                    match p["targetPort"].as_u64() {
                        Some(target) => format!("{}/{protocol}→{target}", p["port"]),
                        None => format!("{}/{protocol}", p["port"]),
                    }
                })
                .collect();
            let resolution = spec["resolution"].as_str().unwrap_or("dns").to_string();
            let vips = &r["status"]["virtualIPs"];
            let vips: Vec<String> = hosts.iter().map(|h| text(&vips[*h])).collect();
            vec![hosts.join(","), ports.join(","), resolution, vips.join(",")]
        }
        Kind::MeshConfig => vec![
            text(&spec["trustDomain"]),
            text(&spec["mtls"]["mode"]),
            text(&spec["defaultAuthorization"]),
        ],
    }
}

/// A policy's `targetRef` as `Kind/name`.
fn target(spec: &Value) -> String {
    let target = &spec["targetRef"];
    format!("{}/{}", text(&target["kind"]), text(&target["name"]))
}

fn proxy_row(p: &Value, now: u64) -> Vec<String> {
    let config = format!(
        "{}/{}",
        number(&p["ackedVersion"]),
        number(&p["sentVersion"])
    );
    vec![
        text(&p["workload"]),
        text(&p["namespace"]),
        text(&p["service"]),
        text(&p["address"]),
        text(&p["proxyVersion"]),
        config,
        text(&p["state"]),
        text(&p["identity"]),
        expires_in(&p["certificateExpires"], now),
        text(&p["lastError"]),
        age(&p["connectedAt"], now),
    ]
}

/// Time left until an RFC 3339 instant, as `age` writes times past; `expired` after.
fn expires_in(v: &Value, now: u64) -> String {
    let Some(then) = v.as_str().and_then(parse_rfc3339) else {
        return NONE.to_string();
    };
    if then <= now {
        return "expired".to_string();
    }
    span(then - now)
}

/// Columns padded to their widest cell and three spaces apart; the last is not padded.
pub(crate) fn align(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(w - cell.chars().count() + 3));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.replace(['\n', '\t'], " "),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => NONE.to_string(),
    }
}

fn number(v: &Value) -> String {
    v.as_u64().unwrap_or(0).to_string()
}

/// `app=web,version=v1`.
fn labels(v: &Value) -> String {
    let pairs: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    joined(pairs)
}

/// `9080/http,9090/grpc`.
fn ports(v: &Value) -> String {
    let ports = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p["appProtocol"].as_str() {
            Some(protocol) => format!("{}/{protocol}", number(&p["port"])),
            None => number(&p["port"]),
        });
    joined(ports.collect())
}

/// The distinct `name`s of references, in order.
fn names<'a>(refs: impl Iterator<Item = &'a Value>) -> String {
    let mut out: Vec<String> = Vec::new();
    for name in refs.filter_map(|r| r["name"].as_str()) {
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    joined(out)
}

fn joined(parts: Vec<String>) -> String {
    if parts.is_empty() {
        NONE.to_string()
    } else {
        parts.join(",")
    }
}

/// The status (`True`, `False`) of a condition, or `<none>`.
fn condition(r: &Value, type_: &str) -> String {
    let found = r["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_);
    found.map_or_else(|| NONE.to_string(), |c| text(&c["status"]))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long ago an RFC 3339 time was, as kubectl shows it: `45s`, `12m`, `5h`, `3d`.
fn age(v: &Value, now: u64) -> String {
    let Some(then) = v.as_str().and_then(parse_rfc3339) else {
        return NONE.to_string();
    };
    span(now.saturating_sub(then))
}

/// `45s`, `12m`, `23h`, `3d`.
pub(crate) fn span(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs}s"),
        120..7_200 => format!("{}m", secs / 60),
        7_200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

pub(crate) use trellis_api::meta::parse_rfc3339;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_times_and_ages() {
        let cases = [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2000-02-29T00:00:00Z", Some(951_782_400)),
            ("2026-11-05T10:05:06Z", Some(1_793_873_106)),
            ("2026-11-05T10:05:06.25Z", Some(1_793_873_106)),
            ("2026-11-05T11:05:06+01:00", Some(1_793_873_106)),
            ("2026-11-05", None),
            ("soon", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_rfc3339(s), want, "{s}");
        }
        let at = |s: u64| age(&json!("1970-01-01T00:00:00Z"), s);
        let ages: Vec<String> = [5, 300, 10_800, 259_200].map(at).to_vec();
        assert_eq!(ages, ["5s", "5m", "3h", "3d"]);
        assert_eq!(age(&Value::Null, 0), NONE);
    }

    #[test]
    fn renders_route_tables() {
        let route = json!({
            "kind": "HTTPRoute",
            "metadata": {"name": "ratings", "namespace": "shop"},
            "spec": {
                "parentRefs": [{"name": "web"}],
                "rules": [{"backendRefs": [{"name": "v1"}, {"name": "v2"}]}, {"backendRefs": [{"name": "v1"}]}],
            },
            "status": {"conditions": [{"type": "ResolvedRefs", "status": "False"}]},
        });
        let table = render(Target::Kind(Kind::HTTPRoute), &[route]);
        let want = "NAME      NAMESPACE   PARENTS   BACKENDS   RESOLVED   AGE\n\
                    ratings   shop        web       v1,v2      False      <none>\n";
        assert_eq!(table, want);
    }

    #[test]
    fn rate_limit_policies_list_local_and_global_limits() {
        let spec = json!({
            "local": [{"requestsPerSecond": 100}],
            "global": [{"requestsPerSecond": 250, "per": "source"}],
        });
        let policy =
            json!({"kind": "RateLimitPolicy", "metadata": {"name": "limits"}, "spec": spec});
        let table = render(Target::Kind(Kind::RateLimitPolicy), &[policy]);
        assert!(
            table.contains("100/s per service, global 250/s per source"),
            "{table}"
        );
    }
}
