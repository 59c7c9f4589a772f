use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON;
use serde_json::{json, Value};
use trellis_api::kind::{TRELLIS_GROUP, TRELLIS_V1ALPHA1};
use trellis_api::{Resource, Spec};

use super::*;

fn schema_of(kind: Kind) -> JSONSchemaProps {
    let crd = definition(kind).expect("a custom resource");
    let version = crd.spec.versions.into_iter().next().expect("a version");
    version
        .schema
        .and_then(|s| s.open_api_v3_schema)
        .expect("a schema")
}

/// The schema of the `spec` property of `kind`'s objects.
fn spec_schema_of(kind: Kind) -> JSONSchemaProps {
    schema_of(kind)
        .properties
        .and_then(|mut p| p.remove("spec"))
        .expect("a spec property")
}

#[test]
fn names_scope_and_subresources_follow_the_kinds() {
    for kind in KINDS {
        let crd = definition(kind).expect("a custom resource");
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{}.{TRELLIS_GROUP}", kind.plural()).as_str())
        );
        let spec = &crd.spec;
        assert_eq!(spec.group, TRELLIS_GROUP);
        assert_eq!(spec.names.kind, kind.name());
        assert_eq!(spec.names.plural, kind.plural());
        assert_eq!(spec.names.categories, Some(vec![CATEGORY.to_string()]));
        let scope = if kind.is_namespaced() {
            "Namespaced"
        } else {
            "Cluster"
        };
        assert_eq!(spec.scope, scope, "{kind}");
        let [version] = spec.versions.as_slice() else {
            panic!("{kind}: expected one version, got {:?}", spec.versions);
        };
        assert_eq!(format!("{}/{}", spec.group, version.name), TRELLIS_V1ALPHA1);
        assert!(version.served && version.storage);
        let subresources = version.subresources.as_ref().expect("subresources");
        assert!(
            subresources.status.is_some(),
            "{kind} has a status subresource"
        );
        let labels = crd.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels.get(PART_OF.0).map(String::as_str), Some(PART_OF.1));
        // Short names, where a kind has one, are ones `trellis get` accepts too.
        for short in spec.names.short_names.iter().flatten() {
            assert_eq!(Kind::from_cli(short), Some(kind), "{short}");
        }
    }
}

#[test]
fn every_trellis_kind_but_service_and_workload_is_a_custom_resource() {
    for kind in Kind::ALL {
        let want = kind.group() == TRELLIS_GROUP && !matches!(kind, Kind::Service | Kind::Workload);
        assert_eq!(definition(kind).is_some(), want, "{kind}");
        assert_eq!(KINDS.contains(&kind), want, "{kind}");
    }
    assert_eq!(definitions().len(), KINDS.len());
}

/// Kubernetes' formats for the types the schemas use; anything else would be ignored.
const KNOWN_FORMATS: [&str; 4] = ["int32", "int64", "double", "float"];

/// What the API server asks of a structural schema
/// (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema):
/// a type on every node outside `oneOf`/`anyOf`/`allOf`, and inside them nothing but
/// value checks (no types, properties, descriptions or defaults); no references; and
/// no `additionalProperties` beside `properties`.
fn check_structural(at: &str, schema: &JSONSchemaProps, in_branch: bool) {
    assert!(schema.ref_path.is_none(), "{at}: $ref");
    if let Some(format) = &schema.format {
        assert!(
            KNOWN_FORMATS.contains(&format.as_str()),
            "{at}: format {format}"
        );
    }
    if in_branch {
        assert!(
            schema.type_.is_none()
                && schema.description.is_none()
                && schema.default.is_none()
                && schema.nullable.is_none()
                && schema.properties.is_none()
                && schema.items.is_none()
                && schema.additional_properties.is_none(),
            "{at}: a oneOf/anyOf branch may only check values: {schema:?}"
        );
    } else {
        assert!(schema.type_.is_some(), "{at}: no type");
    }
    if schema.properties.is_some() {
        assert!(
            schema.additional_properties.is_none(),
            "{at}: additionalProperties beside properties"
        );
    }
    for (name, child) in schema.properties.iter().flatten() {
        check_structural(&format!("{at}.{name}"), child, in_branch);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &schema.items {
        check_structural(&format!("{at}[]"), items, in_branch);
    }
    assert!(
        !matches!(schema.items, Some(JSONSchemaPropsOrArray::Schemas(_))),
        "{at}: tuple"
    );
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &schema.additional_properties {
        check_structural(&format!("{at}.*"), values, in_branch);
    }
    for branch in [&schema.one_of, &schema.any_of, &schema.all_of]
        .into_iter()
        .flatten()
    {
        for (i, b) in branch.iter().enumerate() {
            check_structural(&format!("{at}/branch{i}"), b, true);
        }
    }
}

#[test]
fn schemas_are_structural() {
    for kind in KINDS {
        let schema = schema_of(kind);
        check_structural(kind.name(), &schema, false);
        let props = schema.properties.as_ref().expect("properties");
        assert!(
            props.contains_key("spec") && props.contains_key("status"),
            "{kind}"
        );
    }
}

#[test]
fn status_conditions_merge_by_type() {
    for kind in KINDS {
        let status = schema_of(kind)
            .properties
            .and_then(|mut p| p.remove("status"))
            .expect("status");
        let conditions = &status.properties.as_ref().expect("properties")["conditions"];
        assert_eq!(conditions.x_kubernetes_list_type.as_deref(), Some("map"));
        assert_eq!(
            conditions.x_kubernetes_list_map_keys,
            Some(vec!["type".to_string()])
        );
    }
}

/// Fills in what the API server would from the schema's defaults: for each object
/// present, every absent property that has a default.
fn apply_defaults(schema: &JSONSchemaProps, value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (name, prop) in schema.properties.iter().flatten() {
                if let (false, Some(JSON(default))) = (map.contains_key(name), &prop.default) {
                    map.insert(name.clone(), default.clone());
                }
                if let Some(child) = map.get_mut(name) {
                    apply_defaults(prop, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
                items.iter_mut().for_each(|v| apply_defaults(item, v));
            }
        }
        _ => {}
    }
}

/// A small and a full spec of every kind, as an operator writes them.
fn sample_specs() -> Vec<(Kind, Value)> {
    let service = json!({"kind": "Service", "name": "books"});
    vec![
        (Kind::MeshConfig, json!({})),
        (
            Kind::MeshConfig,
            json!({
                "trustDomain": "shop.example",
                "mtls": {"mode": "strict"},
                "defaultAuthorization": "deny",
                "accessLog": {"format": "text", "services": [{"name": "books"}]},
                "metrics": {"maxRequestSeries": 500},
                "egress": {"mode": "registryOnly"},
                "tracing": {"otlp": {"endpoint": "http://otel:4317"}},
            }),
        ),
        (Kind::BackendPolicy, json!({"targetRef": service})),
        (
            Kind::BackendPolicy,
            json!({
                "targetRef": service,
                "loadBalancer": {"type": "consistent-hash", "hashOn": {"header": "x-user"}},
                "connectTimeout": "500ms",
                "requestTimeout": "1h30m",
                "protocol": "http2",
                "locality": "prefer-zone",
                "zoneFailover": {"minHealthyPercent": 50},
                "retryBudget": {"ratio": 0.1, "window": "10s"},
                "circuitBreaker": {"maxConnections": 10},
                "outlierDetection": {"consecutiveFailures": 3, "baseEjectionTime": "30s"},
                "adaptiveConcurrency": {"tolerance": 1.5},
                "healthCheck": {"type": "grpc", "interval": "5s"},
            }),
        ),
        (Kind::AuthorizationPolicy, json!({"targetRef": service})),
        (
            Kind::AuthorizationPolicy,
            json!({
                "targetRef": service,
                "action": "Deny",
                "rules": [{
                    "from": [{"namespaces": ["shop"]}],
                    "to": [{
                        "ports": [9080],
                        "methods": ["POST"],
                        "paths": [{"exact": "/admin"}, {"prefix": "/internal"}],
                        "headers": [{"name": "x-debug", "value": "1"}],
                    }],
                }],
            }),
        ),
        (
            Kind::FaultInjection,
            json!({
                "targetRef": {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "books"},
                "delay": {"fixed": "2s"},
            }),
        ),
        (
            Kind::FaultInjection,
            json!({
                "targetRef": {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute", "name": "books"},
                "match": {
                    "headers": [{"type": "RegularExpression", "name": "x-chaos", "value": "on|yes"}],
                    "from": {"namespaces": ["test"]},
                },
                "abort": {"grpcStatus": 14, "percent": 10},
            }),
        ),
        (
            Kind::RateLimitPolicy,
            json!({"targetRef": service, "local": [{"requestsPerSecond": 100}]}),
        ),
        (
            Kind::RateLimitPolicy,
            json!({
                "targetRef": service,
                "local": [{"requestsPerSecond": 100, "burst": 200, "per": "source"}],
                "global": [{"requestsPerSecond": 1000}],
            }),
        ),
        (
            Kind::ExternalService,
            json!({"hosts": ["api.example"], "ports": [{"port": 443}]}),
        ),
        (
            Kind::ExternalService,
            json!({
                "hosts": ["api.example"],
                "ports": [{"port": 80, "protocol": "https", "targetPort": 443}],
                "resolution": "static",
                "addresses": ["10.0.3.17", "fd00::17"],
                "tls": {"serverName": "api.example"},
            }),
        ),
    ]
}

fn read_spec(kind: Kind, spec: Value) -> Spec {
    let spec = Spec::from_value(kind, spec).expect("the sample reads");
    spec.validate().expect("the sample is valid");
    spec
}

#[test]
fn schema_defaults_are_serde_defaults() {
    // What the API server stores after defaulting must read as the same spec as what
    // the operator wrote.
    for (kind, spec) in sample_specs() {
        let mut defaulted = spec.clone();
        apply_defaults(&spec_schema_of(kind), &mut defaulted);
        assert_eq!(
            read_spec(kind, defaulted.clone()),
            read_spec(kind, spec.clone()),
            "{kind}: {spec} defaulted to {defaulted}"
        );
    }
}

#[test]
fn custom_resources_read_and_write_the_universal_documents() {
    for (kind, spec) in sample_specs() {
        let metadata = if kind.is_namespaced() {
            json!({"name": "sample", "namespace": "shop"})
        } else {
            json!({"name": "default"})
        };
        let document = json!({
            "apiVersion": TRELLIS_V1ALPHA1,
            "kind": kind.name(),
            "metadata": metadata,
            "spec": spec,
            "status": {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]},
        });
        let resource = Resource::from_value(document.clone()).expect("a resource");
        let want = serde_json::to_value(&resource.spec).expect("spec serializes");
        let (spec, status) = match kind {
            Kind::MeshConfig => typed::<MeshConfig>(&document),
            Kind::BackendPolicy => typed::<BackendPolicy>(&document),
            Kind::AuthorizationPolicy => typed::<AuthorizationPolicy>(&document),
            Kind::FaultInjection => typed::<FaultInjection>(&document),
            Kind::RateLimitPolicy => typed::<RateLimitPolicy>(&document),
            Kind::ExternalService => typed::<ExternalService>(&document),
            _ => unreachable!("{kind} is not a custom resource"),
        };
        assert_eq!(spec, want, "{kind}");
        assert_eq!(Some(status), resource.status, "{kind}");
    }
}

/// The document read as the typed custom resource `R`: its spec written back, and its
/// status.
fn typed<R>(document: &Value) -> (Value, trellis_api::Status)
where
    R: kube::core::object::HasSpec + kube::core::object::HasStatus<Status = trellis_api::Status>,
    R: serde::de::DeserializeOwned,
    R::Spec: Serialize,
{
    let object: R = serde_json::from_value(document.clone()).expect("the typed resource reads");
    let spec = serde_json::to_value(object.spec()).expect("spec serializes");
    (spec, object.status().cloned().expect("a status"))
}

#[test]
fn descriptions_carry_no_rustdoc_links() {
    // `kubectl explain` shows the descriptions as they are: an intra-doc link such as
    // [`normalize_path`] would read as noise there.
    for kind in KINDS {
        let mut schema = schema_of(kind);
        each_schema(&mut schema, &mut |s| {
            let description = s.description.as_deref().unwrap_or_default();
            assert!(!description.contains("[`"), "{kind}: {description}");
        });
    }
}
