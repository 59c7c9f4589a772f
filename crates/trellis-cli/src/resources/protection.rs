//! The `Protection:` section of `trellis describe service` and `describe
//! backendpolicy`: the settings in force for traffic to a Service, the proxy's defaults
//! with the Service's BackendPolicy written over them, as every caller's sidecar
//! applies them.

use serde_json::{json, Value};
use trellis_api::policy::BackendPolicySpec;
use trellis_api::resilience::ResilienceSpec;
use trellis_proxy::config::ResilienceConfig;

/// The section for a Service whose BackendPolicy (if any) is `policy`, a resource as
/// the API returns it.
pub(super) fn section(policy: Option<&Value>) -> anyhow::Result<String> {
    let (spec, from) = match policy {
        Some(p) => {
            let spec: BackendPolicySpec = serde_json::from_value(p["spec"].clone())?;
            let name = p["metadata"]["name"].as_str().unwrap_or_default();
            (
                spec.resilience(),
                format!("defaults and BackendPolicy {name}"),
            )
        }
        None => (
            ResilienceSpec::default(),
            "defaults; no BackendPolicy".into(),
        ),
    };
    let c = ResilienceConfig::from_spec(&spec);
    let effective = json!({
        "retryBudget": c.retry_budget,
        "circuitBreaker": c.circuit_breaker,
        "outlierDetection": c.outlier_detection,
        "adaptiveConcurrency": c.adaptive_concurrency,
        "healthCheck": c.health_check.map_or(json!("none"), |h| json!(h)),
    });
    let yaml = serde_saphyr::to_string(&effective)?;
    let mut text = format!("\nProtection ({from}):\n");
    for line in yaml.lines() {
        text.push_str(&format!("  {line}\n"));
    }
    Ok(text)
}

/// The policy that applies to Service `name` among `policies`: the oldest targeting it,
/// then the first by name, as the control plane resolves conflicts.
pub(super) fn policy_for<'a>(policies: &'a [Value], name: &str) -> Option<&'a Value> {
    policies
        .iter()
        .filter(|p| p["spec"]["targetRef"]["name"] == name)
        .min_by_key(|p| {
            (
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_is_written_over_the_defaults() {
        let policy = json!({
            "metadata": {"name": "books"},
            "spec": {
                "targetRef": {"kind": "Service", "name": "books"},
                "circuitBreaker": {"maxRequests": 7},
                "adaptiveConcurrency": {"enabled": false},
            },
        });
        let text = section(Some(&policy)).expect("section");
        assert!(text.contains("BackendPolicy books"), "{text}");
        assert!(text.contains("maxRequests: 7"), "{text}");
        assert!(text.contains("maxConnections: 1024"), "{text}");
        assert!(text.contains("ratio: 0.2"), "{text}");
        assert!(text.contains("healthCheck: none"), "{text}");
        let defaults = section(None).expect("section");
        assert!(defaults.contains("no BackendPolicy"));
        assert!(defaults.contains("maxRequests: 1024"));
        let others = [
            json!({"spec": {"targetRef": {"name": "cart"}}}),
            policy.clone(),
        ];
        assert_eq!(policy_for(&others, "books"), Some(&policy));
    }
}
