use k8s_openapi::api::rbac::v1::{PolicyRule, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;

fn custom() -> InstallSettings {
    InstallSettings {
        namespace: "mesh".to_string(),
        image: "registry.example/trellis:test".to_string(),
        replicas: 3,
        failure_policy: FailurePolicy::Ignore,
    }
}

#[test]
fn defaults() {
    let settings = InstallSettings::default();
    assert_eq!(settings.namespace, "trellis-system");
    assert_eq!(settings.image, format!("trellis:{VERSION}"));
    assert_eq!(settings.replicas, 2);
    assert_eq!(settings.failure_policy, FailurePolicy::Fail);
}

#[test]
fn failure_policy_reads_either_spelling() {
    let cases = [
        ("Fail", Ok(FailurePolicy::Fail)),
        ("fail", Ok(FailurePolicy::Fail)),
        ("Ignore", Ok(FailurePolicy::Ignore)),
        ("IGNORE", Ok(FailurePolicy::Ignore)),
        ("", Err(UnknownFailurePolicy(String::new()))),
        ("allow", Err(UnknownFailurePolicy("allow".to_string()))),
    ];
    for (input, want) in cases {
        assert_eq!(input.parse::<FailurePolicy>(), want, "{input:?}");
    }
    assert_eq!(
        "allow".parse::<FailurePolicy>().map_err(|e| e.to_string()),
        Err("unknown failure policy \"allow\": expected Fail or Ignore".to_string())
    );
}

#[test]
fn objects_come_in_apply_order_in_the_namespace_asked_for() {
    let objects = Manifests::new(&custom()).objects().expect("objects");
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().expect("a kind"))
        .collect();
    let crds = vec!["CustomResourceDefinition"; crate::crd::KINDS.len()];
    let want = [
        &["Namespace"][..],
        &crds,
        &[
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "MutatingWebhookConfiguration",
        ],
    ]
    .concat();
    assert_eq!(kinds, want);
    for object in &objects {
        let meta = &object["metadata"];
        let cluster_wide = matches!(
            object["kind"].as_str(),
            Some(
                "Namespace"
                    | "CustomResourceDefinition"
                    | "ClusterRole"
                    | "ClusterRoleBinding"
                    | "MutatingWebhookConfiguration"
            )
        );
        let want_ns = if cluster_wide { None } else { Some("mesh") };
        assert_eq!(meta["namespace"].as_str(), want_ns, "{object}");
        assert_eq!(meta["labels"][crd::PART_OF.0], crd::PART_OF.1, "{object}");
        assert!(object["apiVersion"].is_string(), "{object}");
    }
    assert_eq!(objects[0]["metadata"]["name"], "mesh");
    assert_eq!(objects[0]["metadata"]["labels"][INJECT_LABEL], "disabled");
}

#[test]
fn yaml_reads_back_as_the_same_objects() {
    let manifests = Manifests::new(&InstallSettings::default());
    let yaml = manifests.to_yaml().expect("yaml");
    let read: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("the YAML reads");
    assert_eq!(read, manifests.objects().expect("objects"));
}

#[test]
fn deployment_runs_the_control_plane_unprivileged() {
    let settings = custom();
    let manifests = Manifests::new(&settings);
    let spec = manifests.deployment.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(3));
    let template = &spec.template;
    let pod = template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some(CONTROL));
    let [container] = pod.containers.as_slice() else {
        panic!("one container: {:?}", pod.containers);
    };
    assert_eq!(
        container.image.as_deref(),
        Some("registry.example/trellis:test")
    );
    let args = container.args.clone().expect("args");
    assert_eq!(args[..2], ["control", "--kubernetes"]);
    assert!(args
        .windows(2)
        .any(|w| w == ["--grpc-addr", "0.0.0.0:7100"]));
    assert!(args
        .windows(2)
        .any(|w| w == ["--http-addr", "0.0.0.0:7180"]));
    assert!(args
        .windows(2)
        .any(|w| w == ["--webhook-addr", "0.0.0.0:7443"]));
    let ports: Vec<(&str, i32)> = container
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref().expect("named"), p.container_port))
        .collect();
    assert_eq!(ports, [("grpc", 7100), ("http", 7180), ("webhook", 7443)]);
    let security = container
        .security_context
        .as_ref()
        .expect("security context");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let pod_security = pod.security_context.as_ref().expect("pod security");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    let env: Vec<&str> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(env, ["TRELLIS_NAMESPACE", "TRELLIS_IMAGE"]);

    // The Deployment, the budget and the Service all pick the template's Pods.
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("labels");
    let picks = |selector: &BTreeMap<String, String>| {
        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    assert!(picks(
        spec.selector.match_labels.as_ref().expect("selector")
    ));
    let budget = manifests.disruption_budget.spec.as_ref().expect("budget");
    assert_eq!(budget.min_available, Some(IntOrString::Int(1)));
    let budget_selector = budget
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref());
    assert!(picks(budget_selector.expect("budget selector")));
    let service = manifests.service.spec.as_ref().expect("service");
    assert!(picks(service.selector.as_ref().expect("service selector")));
    assert_eq!(
        labels.get(INJECT_LABEL).map(String::as_str),
        Some("disabled")
    );
}

#[test]
fn service_exposes_grpc_http_and_the_webhook_on_443() {
    let manifests = Manifests::new(&InstallSettings::default());
    let pod = manifests
        .deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod");
    let container_port = |name: &str| {
        pod.containers[0]
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    };
    let service = manifests.service.spec.expect("service spec");
    let ports: Vec<(&str, i32, Option<i32>)> = service
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let target = match &p.target_port {
                Some(IntOrString::String(name)) => container_port(name),
                other => panic!("target port by name, got {other:?}"),
            };
            (p.name.as_deref().expect("named"), p.port, target)
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("grpc", 7100, Some(7100)),
            ("http", 7180, Some(7180)),
            ("webhook", 443, Some(7443)),
        ]
    );
}

#[test]
fn webhook_selects_opted_in_pods_outside_the_control_plane() {
    for settings in [InstallSettings::default(), custom()] {
        let config = Manifests::new(&settings).webhook;
        assert_eq!(config.metadata.name.as_deref(), Some(WEBHOOK_CONFIGURATION));
        let hooks = config.webhooks.expect("webhooks");
        assert_eq!(hooks.len(), 2);
        for hook in &hooks {
            let service = hook.client_config.service.as_ref().expect("a service");
            assert_eq!(
                (service.name.as_str(), service.namespace.as_str()),
                (CONTROL, settings.namespace.as_str())
            );
            assert_eq!(
                (service.path.as_deref(), service.port),
                (Some(WEBHOOK_PATH), Some(443))
            );
            assert_eq!(
                hook.client_config.ca_bundle, None,
                "filled by the control plane"
            );
            assert_eq!(
                hook.failure_policy.as_deref(),
                Some(settings.failure_policy.as_str())
            );
            assert_eq!(hook.side_effects, "None");
            assert_eq!(hook.admission_review_versions, ["v1"]);
            assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
            let rules = hook.rules.as_ref().expect("rules");
            assert_eq!(rules.len(), 1);
            assert_eq!(rules[0].resources, Some(vec!["pods".to_string()]));
            assert_eq!(rules[0].operations, Some(vec!["CREATE".to_string()]));
        }
        // Namespaces and Pods, by their labels: which webhook (if any) takes the Pod.
        let cases = [
            (
                settings.namespace.as_str(),
                Some("enabled"),
                Some("enabled"),
                None,
            ),
            ("shop", Some("enabled"), None, Some(0)),
            ("shop", Some("enabled"), Some("enabled"), Some(0)),
            ("shop", Some("enabled"), Some("disabled"), None),
            ("shop", None, Some("enabled"), Some(1)),
            ("shop", None, None, None),
            ("shop", None, Some("disabled"), None),
            ("shop", Some("disabled"), Some("enabled"), None),
        ];
        for (namespace, ns_label, pod_label, want) in cases {
            let ns_labels = labels(&[
                ("kubernetes.io/metadata.name", Some(namespace)),
                (INJECT_LABEL, ns_label),
            ]);
            let pod_labels = labels(&[(INJECT_LABEL, pod_label)]);
            let taken: Vec<usize> = hooks
                .iter()
                .enumerate()
                .filter(|(_, h)| {
                    matches(h.namespace_selector.as_ref().expect("ns"), &ns_labels)
                        && matches(h.object_selector.as_ref().expect("pods"), &pod_labels)
                })
                .map(|(i, _)| i)
                .collect();
            assert_eq!(
                taken,
                want.into_iter().collect::<Vec<_>>(),
                "{namespace} {ns_label:?} {pod_label:?}"
            );
        }
    }
}

fn labels(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .filter_map(|(k, v)| Some((k.to_string(), (*v)?.to_string())))
        .collect()
}

/// Whether `labels` match `selector`, as the API server decides.
fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = selector.match_expressions.iter().flatten().all(|r| {
        let values = r.values.clone().unwrap_or_default();
        let value = labels.get(&r.key);
        match r.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("operator {other}"),
        }
    });
    by_label && by_expression
}

/// Whether `rules` allow `verb` on `resource` (`pods`, `httproutes/status`) of `group`,
/// for the object named `name`, as RBAC decides.
fn allows(rules: &[PolicyRule], verb: &str, group: &str, resource: &str, name: &str) -> bool {
    rules.iter().any(|r| {
        let has = |list: &Option<Vec<String>>, want: &str| list.iter().flatten().any(|x| x == want);
        r.verbs.iter().any(|v| v == verb)
            && has(&r.api_groups, group)
            && has(&r.resources, resource)
            && r.resource_names
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == name))
    })
}

#[test]
fn permissions_are_what_the_control_plane_needs_and_no_more() {
    let manifests = Manifests::new(&InstallSettings::default());
    let cluster = manifests.cluster_role.rules.expect("cluster rules");
    let own = manifests.role.rules.expect("namespace rules");
    for rule in cluster.iter().chain(&own) {
        let all = [
            &rule.verbs[..],
            rule.api_groups.as_deref().unwrap_or_default(),
            rule.resources.as_deref().unwrap_or_default(),
        ]
        .concat();
        assert!(
            !all.iter().any(|s| s.contains('*')),
            "no wildcards: {rule:?}"
        );
    }
    const GATEWAY: &str = "gateway.networking.k8s.io";
    const TRELLIS: &str = "trellis.dev";
    const ADMISSION: &str = "admissionregistration.k8s.io";
    const WEBHOOKS: &str = "mutatingwebhookconfigurations";
    // (verb, group, resource, name, allowed cluster-wide, allowed in its namespace)
    let cases = [
        ("list", "", "pods", "", true, false),
        ("watch", "", "namespaces", "", true, false),
        ("get", "", "serviceaccounts", "", true, false),
        (
            "watch",
            "discovery.k8s.io",
            "endpointslices",
            "",
            true,
            false,
        ),
        ("create", "", "pods", "", false, false),
        ("delete", "", "services", "", false, false),
        ("list", GATEWAY, "httproutes", "", true, false),
        ("watch", GATEWAY, "referencegrants", "", true, false),
        ("update", GATEWAY, "httproutes", "", false, false),
        ("patch", GATEWAY, "grpcroutes/status", "", true, false),
        ("update", GATEWAY, "tlsroutes/status", "", true, false),
        ("list", TRELLIS, "backendpolicies", "", true, false),
        ("watch", TRELLIS, "meshconfigs", "", true, false),
        ("update", TRELLIS, "ratelimitpolicies", "", false, false),
        ("patch", TRELLIS, "externalservices/status", "", true, false),
        (
            "create",
            "authentication.k8s.io",
            "tokenreviews",
            "",
            true,
            false,
        ),
        ("patch", ADMISSION, WEBHOOKS, "trellis", true, false),
        ("watch", ADMISSION, WEBHOOKS, "trellis", true, false),
        ("patch", ADMISSION, WEBHOOKS, "other", false, false),
        ("watch", ADMISSION, WEBHOOKS, "other", false, false),
        ("delete", ADMISSION, WEBHOOKS, "trellis", false, false),
        ("create", "events.k8s.io", "events", "", true, false),
        ("get", "", "secrets", "", false, true),
        ("update", "", "secrets", "", false, true),
        ("delete", "", "secrets", "", false, false),
        ("update", "coordination.k8s.io", "leases", "", false, true),
        ("create", "coordination.k8s.io", "leases", "", false, true),
    ];
    for (verb, group, resource, name, want_cluster, want_own) in cases {
        let case = format!("{verb} {group}/{resource} {name}");
        assert_eq!(
            allows(&cluster, verb, group, resource, name),
            want_cluster,
            "cluster-wide: {case}"
        );
        assert_eq!(
            allows(&own, verb, group, resource, name),
            want_own,
            "in trellis-system: {case}"
        );
    }
    // Both bindings give the roles to the control plane's ServiceAccount.
    let subject = |s: Option<Vec<Subject>>| {
        let s = s.expect("subjects");
        (s[0].kind.clone(), s[0].name.clone(), s[0].namespace.clone())
    };
    let want = (
        "ServiceAccount".to_string(),
        CONTROL.to_string(),
        Some(DEFAULT_NAMESPACE.to_string()),
    );
    assert_eq!(subject(manifests.cluster_role_binding.subjects), want);
    assert_eq!(subject(manifests.role_binding.subjects), want);
    assert_eq!(manifests.cluster_role_binding.role_ref.kind, "ClusterRole");
    assert_eq!(manifests.role_binding.role_ref.kind, "Role");
}

#[test]
fn uninstall_deletes_the_webhook_first_and_the_namespace_last() {
    let manifests = Manifests::new(&custom());
    let without = manifests.deletions(false).expect("deletions");
    let with = manifests.deletions(true).expect("deletions");
    assert_eq!(with.len(), manifests.objects().expect("objects").len());
    assert_eq!(without.len(), with.len() - crate::crd::KINDS.len());
    assert!(without
        .iter()
        .all(|o| o["kind"] != "CustomResourceDefinition"));
    for deletions in [&without, &with] {
        assert_eq!(deletions[0]["kind"], "MutatingWebhookConfiguration");
        let last = deletions.last().expect("a last");
        assert_eq!(
            (&last["kind"], &last["metadata"]["name"]),
            (&json!("Namespace"), &json!("mesh"))
        );
    }
    assert_eq!(
        with[1],
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": CONTROL, "namespace": "mesh"}})
    );
    assert!(with
        .iter()
        .any(|o| o["metadata"]["name"] == "backendpolicies.trellis.dev"));
    let yaml = manifests.deletions_yaml(false).expect("yaml");
    let read: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("reads");
    assert_eq!(read, without);
}
