use super::{example, EXAMPLES};
use crate::route::filter::HTTPRouteFilter;
use crate::route::http::PathMatchType;
use crate::{parse_documents, Kind, ObjectRef, Resource, Spec};

#[test]
fn every_example_parses_as_its_kinds() {
    let cases: &[(&str, &[Kind])] = &[
        ("httproute-canary.yaml", &[Kind::HTTPRoute]),
        ("httproute-filters.yaml", &[Kind::HTTPRoute]),
        ("grpcroute.yaml", &[Kind::GRPCRoute]),
        ("tcproute.yaml", &[Kind::TCPRoute]),
        ("tlsroute.yaml", &[Kind::TLSRoute]),
        (
            "service.yaml",
            &[Kind::Service, Kind::Service, Kind::Service],
        ),
        ("workload.yaml", &[Kind::Workload]),
        ("meshconfig.yaml", &[Kind::MeshConfig]),
        ("backendpolicy.yaml", &[Kind::BackendPolicy]),
        ("faultinjection.yaml", &[Kind::FaultInjection]),
        ("ratelimitpolicy.yaml", &[Kind::RateLimitPolicy]),
        ("externalservice.yaml", &[Kind::ExternalService]),
        (
            "authorizationpolicy.yaml",
            &[Kind::AuthorizationPolicy, Kind::AuthorizationPolicy],
        ),
    ];
    assert_eq!(cases.len(), EXAMPLES.len(), "an example has no case");
    for (name, kinds) in cases {
        let resources = parse_documents(example(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<Kind> = resources.iter().map(|r| r.kind).collect();
        assert_eq!(&got, kinds, "{name}");
        for r in &resources {
            assert_eq!(r.spec.kind(), r.kind, "{name}");
            assert!(r
                .kind
                .accepted_api_versions()
                .contains(&r.api_version.as_str()));
        }
    }
}

#[test]
fn every_example_round_trips_through_json_and_yaml() {
    for (name, text) in EXAMPLES {
        let resources = parse_documents(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for r in resources {
            let json = serde_json::to_string(&r).expect("to JSON");
            let from_json: Resource = serde_json::from_str(&json).expect("from JSON");
            assert_eq!(from_json, r, "{name} via JSON");
            let reparsed = parse_documents(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(reparsed, vec![r.clone()], "{name} via JSON as YAML input");

            let yaml = r.to_yaml().expect("to YAML");
            let from_yaml =
                parse_documents(&yaml).unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
            assert_eq!(from_yaml, vec![r.clone()], "{name} via YAML:\n{yaml}");
            let direct: Resource = serde_saphyr::from_str(&yaml).expect("serde from YAML");
            assert_eq!(direct, r, "{name} via serde YAML");
        }
    }
}

#[test]
fn canary_route_reads_as_written_with_defaults() {
    let resources = parse_documents(example("httproute-canary.yaml")).expect("parses");
    let r = &resources[0];
    assert_eq!(r.metadata.name, "ratings-canary");
    assert_eq!(r.metadata.namespace, "bookinfo");
    let Spec::HTTPRoute(spec) = &r.spec else {
        panic!("not an HTTPRoute: {:?}", r.spec)
    };
    assert_eq!(spec.parent_refs[0].kind, "Service");
    assert_eq!(spec.parent_refs[0].port, Some(9080));

    let header_rule = &spec.rules[0];
    let header = &header_rule.matches[0].headers[0];
    assert_eq!(
        (header.name.as_str(), header.value.as_str()),
        ("x-canary", "true")
    );
    assert_eq!(header_rule.backend_refs[0].weight, 1, "default weight");
    assert_eq!(header_rule.backend_refs[0].kind, "Service", "default kind");

    let split = &spec.rules[1];
    let weights: Vec<(&str, u32)> = split
        .backend_refs
        .iter()
        .map(|b| (b.name.as_str(), b.weight))
        .collect();
    assert_eq!(weights, [("ratings-v1", 90), ("ratings-v2", 10)]);
    let path = split.matches[0].path.as_ref().expect("path match");
    assert_eq!(path.type_, PathMatchType::PathPrefix);
    assert!(matches!(
        split.filters[0],
        HTTPRouteFilter::RequestHeaderModifier(_)
    ));
    let timeouts = split.timeouts.as_ref().expect("timeouts");
    assert_eq!(timeouts.request, Some(crate::Duration::from_secs(10)));
    let retry = split.retry.as_ref().expect("retry");
    assert_eq!(retry.codes, [502, 503, 504]);
    assert_eq!(retry.backoff, Some(crate::Duration::from_millis(100)));
}

#[test]
fn references_list_parents_backends_mirrors_and_targets() {
    let svc = |ns: &str, name: &str| ObjectRef {
        kind: Kind::Service,
        namespace: ns.into(),
        name: name.into(),
    };
    let cases: &[(&str, Vec<ObjectRef>)] = &[
        (
            "httproute-canary.yaml",
            vec![
                svc("bookinfo", "ratings"),
                svc("bookinfo", "ratings-v2"),
                svc("bookinfo", "ratings-v1"),
            ],
        ),
        (
            "httproute-filters.yaml",
            vec![
                svc("bookinfo", "reviews"),
                svc("bookinfo", "reviews-v1"),
                svc("bookinfo", "reviews-v2"),
                svc("bookinfo", "reviews-v3"),
            ],
        ),
        (
            "grpcroute.yaml",
            vec![
                svc("default", "greeter"),
                svc("default", "greeter-v2"),
                svc("default", "greeter-v1"),
            ],
        ),
        (
            "tcproute.yaml",
            vec![svc("data", "postgres"), svc("data", "postgres-primary")],
        ),
        ("backendpolicy.yaml", vec![svc("bookinfo", "ratings")]),
        ("authorizationpolicy.yaml", vec![svc("shop", "cart")]),
        ("meshconfig.yaml", vec![]),
        ("workload.yaml", vec![]),
    ];
    for (name, want) in cases {
        let r = &parse_documents(example(name)).expect("parses")[0];
        assert_eq!(&r.references(), want, "{name}");
    }
    assert_eq!(svc("a", "b").to_string(), "Service a/b");
}

#[test]
fn minimal_documents_take_their_defaults() {
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                 metadata: {name: r}\n\
                 spec:\n  parentRefs: [{name: web}]\n  rules:\n  \
                 - matches: [{path: {}}]\n    backendRefs: [{name: web}]\n";
    let r = &parse_documents(route).expect("parses")[0];
    assert_eq!(r.metadata.namespace, "default");
    let Spec::HTTPRoute(spec) = &r.spec else {
        panic!("not an HTTPRoute")
    };
    let path = spec.rules[0].matches[0].path.as_ref().expect("path");
    assert_eq!(
        (path.type_, path.value.as_str()),
        (PathMatchType::PathPrefix, "/")
    );

    let mesh = "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\n\
                metadata: {name: default, namespace: ignored}\n";
    let r = &parse_documents(mesh).expect("parses")[0];
    assert_eq!(
        r.metadata.namespace, "",
        "cluster-wide kinds have no namespace"
    );
    let Spec::MeshConfig(spec) = &r.spec else {
        panic!("not a MeshConfig")
    };
    assert_eq!(spec, &crate::policy::MeshConfigSpec::default());
    assert_eq!(spec.trust_domain, "trellis.local");

    let workload = "apiVersion: trellis.dev/v1alpha1\nkind: Workload\n\
                    metadata: {name: w}\nspec: {address: '::1'}\n";
    let r = &parse_documents(workload).expect("parses")[0];
    let Spec::Workload(spec) = &r.spec else {
        panic!("not a Workload")
    };
    assert_eq!(spec.service_account, "default");
}

#[test]
fn resources_built_in_code_validate_and_carry_conditions() {
    use crate::meta::{ACCEPTED, RESOLVED_REFS};
    use crate::route::http::{HTTPRouteRule, HTTPRouteSpec};
    use crate::route::{HTTPBackendRef, ParentReference};
    use crate::{Condition, ConditionStatus, ObjectMeta};

    let spec = HTTPRouteSpec {
        parent_refs: vec![ParentReference::service("ratings")],
        rules: vec![HTTPRouteRule {
            backend_refs: vec![HTTPBackendRef::service("ratings-v1", 1)],
            ..HTTPRouteRule::default()
        }],
        ..HTTPRouteSpec::default()
    };
    let mut meta = ObjectMeta::new("default", "ratings");
    meta.generation = Some(3);
    let mut r = Resource::new(meta, Spec::HTTPRoute(spec));
    assert_eq!(r.api_version, "gateway.networking.k8s.io/v1");
    r.validate().expect("valid");

    assert!(r.set_condition(Condition::accepted()));
    let missing = [r.references()[1].clone()];
    assert!(r.set_condition(Condition::resolved_refs(&missing)));
    let status = r.status.as_ref().expect("status");
    assert_eq!(
        status.condition(ACCEPTED).map(|c| c.observed_generation),
        Some(Some(3))
    );
    let refs = status.condition(RESOLVED_REFS).expect("resolved refs");
    assert_eq!(refs.status, ConditionStatus::False);
    assert_eq!(refs.reason, "BackendNotFound");
    assert_eq!(refs.message, "not found: Service default/ratings-v1");
    r.validate().expect("still valid with status");

    let json = serde_json::to_value(&r).expect("serializes");
    assert_eq!(json["status"]["conditions"][1]["type"], "ResolvedRefs");
    assert_eq!(json["status"]["conditions"][1]["status"], "False");
    assert_eq!(
        json["spec"]["rules"][0]["backendRefs"][0]["kind"],
        "Service"
    );
}

#[test]
fn tcp_route_is_read_as_v1_and_v1alpha2_and_written_as_v1alpha2() {
    let text = example("tcproute.yaml");
    for version in ["v1alpha2", "v1"] {
        let doc = text.replace("/v1alpha2", &format!("/{version}"));
        let r = &parse_documents(&doc).unwrap_or_else(|e| panic!("{version}: {e}"))[0];
        assert_eq!(
            r.api_version,
            format!("gateway.networking.k8s.io/{version}")
        );
    }
    assert_eq!(
        Kind::TCPRoute.api_version(),
        "gateway.networking.k8s.io/v1alpha2"
    );
}
