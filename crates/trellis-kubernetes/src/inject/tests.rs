use k8s_openapi::api::core::v1::{Container, EnvVar};
use serde_json::{json, Value};

use super::*;

fn template(pod: Value) -> PodTemplateSpec {
    serde_json::from_value(pod).expect("a Pod template")
}

fn web() -> Value {
    json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "serviceAccountName": "web",
            "initContainers": [{"name": "migrate", "image": "web:1"}],
            "containers": [
                {"name": "web", "image": "web:1", "ports": [
                    {"containerPort": 8080}, {"containerPort": 9090, "protocol": "TCP"},
                    {"containerPort": 5353, "protocol": "UDP"}
                ]},
                {"name": "metrics", "image": "exporter:1", "ports": [{"containerPort": 8080}]}
            ]
        }
    })
}

fn with_annotations(mut pod: Value, annotations: Value) -> Value {
    pod["metadata"]["annotations"] = annotations;
    pod
}

fn injected(pod: Value) -> PodTemplateSpec {
    let mut t = template(pod);
    let decision = inject_template(&mut t, Some("shop"), &InjectSettings::new()).expect("valid");
    assert_eq!(decision, Decision::Injected);
    t
}

fn init(t: &PodTemplateSpec, i: usize) -> &Container {
    &t.spec
        .as_ref()
        .expect("spec")
        .init_containers
        .as_ref()
        .expect("init")[i]
}

fn env<'a>(c: &'a Container, name: &str) -> &'a EnvVar {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

fn env_value<'a>(c: &'a Container, name: &str) -> &'a str {
    env(c, name).value.as_deref().expect("a value")
}

#[test]
fn capture_then_sidecar_then_the_pods_own_init_containers() {
    let t = injected(web());
    let names: Vec<&str> = t
        .spec
        .as_ref()
        .expect("spec")
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, [INIT_CONTAINER, PROXY_CONTAINER, "migrate"]);
    assert_eq!(
        t.metadata
            .as_ref()
            .expect("meta")
            .annotations
            .as_ref()
            .expect("annotations")[INJECTED],
        VERSION
    );
}

#[test]
fn the_proxy_is_a_native_sidecar_as_the_contract_says() {
    let t = injected(web());
    let proxy = serde_json::to_value(init(&t, 1)).expect("json");
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["image"], format!("{DEFAULT_IMAGE}:{VERSION}"));
    assert_eq!(proxy["args"], json!(["proxy", "--kubernetes"]));
    for probe in ["startupProbe", "readinessProbe"] {
        assert_eq!(
            proxy[probe]["httpGet"],
            json!({"path": "/ready", "port": 15020}),
            "{probe}"
        );
    }
    assert_eq!(
        proxy["securityContext"],
        json!({
            "runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": true,
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}
        })
    );
    assert_eq!(
        proxy["volumeMounts"],
        json!([{"name": "trellis-token", "mountPath": TOKEN_DIR, "readOnly": true}])
    );
    assert_eq!(
        proxy["resources"],
        json!({"requests": {"cpu": "100m", "memory": "64Mi"}})
    );
    let proxy = init(&t, 1);
    for (name, path) in [
        ("TRELLIS_POD_NAME", "metadata.name"),
        ("TRELLIS_POD_NAMESPACE", "metadata.namespace"),
        ("TRELLIS_POD_IP", "status.podIP"),
        ("TRELLIS_SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ] {
        let field = env(proxy, name)
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref());
        assert_eq!(field.map(|f| f.field_path.as_str()), Some(path), "{name}");
    }
    assert_eq!(
        env_value(proxy, "TRELLIS_CONTROL_GRPC"),
        DEFAULT_CONTROL_GRPC
    );
    assert_eq!(
        env_value(proxy, "TRELLIS_TOKEN_FILE"),
        "/var/run/secrets/trellis.dev/serviceaccount/token"
    );
    // TCP ports of every app container, once each; not the UDP one.
    assert_eq!(env_value(proxy, "TRELLIS_APP_PORTS"), "8080,9090");
    assert_eq!(env_value(proxy, "TRELLIS_LOG"), "info");
}

#[test]
fn the_capture_container_runs_iptables_install_with_network_capabilities() {
    let t = injected(web());
    let capture = serde_json::to_value(init(&t, 0)).expect("json");
    assert_eq!(
        capture["args"],
        json!([
            "iptables",
            "install",
            "--inbound-port",
            "7143",
            "--outbound-port",
            "7140",
            "--admin-port",
            "15020",
            "--proxy-uid",
            "1337"
        ])
    );
    assert_eq!(
        capture["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    assert!(
        capture.get("restartPolicy").is_none(),
        "runs once, to completion"
    );
}

#[test]
fn the_token_volume_is_projected_for_the_trellis_audience() {
    let t = injected(web());
    let volumes = serde_json::to_value(&t.spec.as_ref().expect("spec").volumes).expect("json");
    assert_eq!(
        volumes,
        json!([{"name": "trellis-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "trellis", "expirationSeconds": 3600, "path": "token"
        }}]}}])
    );
}

#[test]
fn every_annotation_reaches_the_containers() {
    let t = injected(with_annotations(
        web(),
        json!({
            "trellis.dev/exclude-inbound-ports": "9090",
            "trellis.dev/exclude-outbound-ports": "5432,6379",
            "trellis.dev/exclude-outbound-ip-ranges": "10.0.0.0/8, fd00::/8",
            "trellis.dev/proxy-cpu": "250m",
            "trellis.dev/proxy-memory": "128Mi",
            "trellis.dev/proxy-cpu-limit": "1",
            "trellis.dev/proxy-memory-limit": "256Mi",
            "trellis.dev/proxy-log-level": "debug",
        }),
    ));
    let args = init(&t, 0).args.clone().expect("args");
    assert_eq!(
        args[10..],
        [
            "--exclude-inbound-ports",
            "9090",
            "--exclude-outbound-ports",
            "5432,6379",
            "--exclude-outbound-cidrs",
            "10.0.0.0/8,fd00::/8",
        ]
    );
    let proxy = init(&t, 1);
    assert_eq!(
        env_value(proxy, "TRELLIS_APP_PORTS"),
        "8080",
        "an excluded port is not the mesh's"
    );
    assert_eq!(env_value(proxy, "TRELLIS_LOG"), "debug");
    assert_eq!(
        serde_json::to_value(&proxy.resources).expect("json"),
        json!({"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}})
    );
}

#[test]
fn settings_choose_image_control_plane_and_default_resources() {
    let settings = InjectSettings {
        image: "registry.local/trellis:dev".into(),
        control_grpc: "https://cp.mesh.svc:7100".into(),
        resources: ProxyResources {
            cpu_request: None,
            memory_request: None,
            cpu_limit: None,
            memory_limit: Some("1Gi".into()),
        },
        ..InjectSettings::new()
    };
    let mut t = template(web());
    assert_eq!(
        inject_template(&mut t, None, &settings),
        Ok(Decision::Injected)
    );
    for i in [0, 1] {
        assert_eq!(
            init(&t, i).image.as_deref(),
            Some("registry.local/trellis:dev")
        );
    }
    assert_eq!(
        env_value(init(&t, 1), "TRELLIS_CONTROL_GRPC"),
        "https://cp.mesh.svc:7100"
    );
    assert_eq!(
        serde_json::to_value(&init(&t, 1).resources).expect("json"),
        json!({"limits": {"memory": "1Gi"}})
    );
}

#[test]
fn injecting_twice_is_injecting_once() {
    let once = injected(web());
    let mut twice = once.clone();
    let decision =
        inject_template(&mut twice, Some("shop"), &InjectSettings::new()).expect("valid");
    assert_eq!(decision, Decision::Skipped(SkipReason::AlreadyInjected));
    assert_eq!(twice, once);
    // The sidecar alone, without the annotation (someone removed it), is enough.
    let mut stripped = once.clone();
    stripped.metadata.as_mut().expect("meta").annotations = None;
    let before = stripped.clone();
    let decision =
        inject_template(&mut stripped, Some("shop"), &InjectSettings::new()).expect("valid");
    assert_eq!(decision, Decision::Skipped(SkipReason::AlreadyInjected));
    assert_eq!(stripped, before);
    // So is the capture container alone (someone removed the proxy).
    let mut capture_only = once.clone();
    capture_only.metadata.as_mut().expect("meta").annotations = None;
    let spec = capture_only.spec.as_mut().expect("spec");
    spec.init_containers.as_mut().expect("init").remove(1);
    let decision =
        inject_template(&mut capture_only, Some("shop"), &InjectSettings::new()).expect("valid");
    assert_eq!(decision, Decision::Skipped(SkipReason::AlreadyInjected));
}

#[test]
fn pods_left_alone_say_why() {
    let mut host = web();
    host["spec"]["hostNetwork"] = json!(true);
    let mut label = web();
    label["metadata"]["labels"]["trellis.dev/inject"] = json!("disabled");
    let mut in_control = web();
    in_control["metadata"]["namespace"] = json!("trellis-system");
    let cases = [
        ("label opt-out", label, Some("shop"), SkipReason::OptedOut),
        (
            "annotation opt-out",
            with_annotations(web(), json!({"trellis.dev/inject": "disabled"})),
            Some("shop"),
            SkipReason::OptedOut,
        ),
        (
            "injected annotation",
            with_annotations(web(), json!({"trellis.dev/injected": "0.0.9"})),
            Some("shop"),
            SkipReason::AlreadyInjected,
        ),
        ("host network", host, Some("shop"), SkipReason::HostNetwork),
        (
            "control plane's namespace (request)",
            web(),
            Some("trellis-system"),
            SkipReason::ControlPlaneNamespace,
        ),
        (
            "control plane's namespace (metadata)",
            in_control,
            None,
            SkipReason::ControlPlaneNamespace,
        ),
        (
            "no spec",
            json!({"metadata": {"name": "x"}}),
            Some("shop"),
            SkipReason::NoSpec,
        ),
    ];
    for (name, pod, namespace, reason) in cases {
        let mut t = template(pod);
        let before = t.clone();
        let decision = inject_template(&mut t, namespace, &InjectSettings::new()).expect(name);
        assert_eq!(decision, Decision::Skipped(reason), "{name}");
        assert_eq!(t, before, "{name}: left unchanged");
    }
}

#[test]
fn a_bad_annotation_is_an_error_and_changes_nothing() {
    let mut t = template(with_annotations(
        web(),
        json!({"trellis.dev/proxy-memory": "lots"}),
    ));
    let before = t.clone();
    let err = inject_template(&mut t, None, &InjectSettings::new()).expect_err("bad quantity");
    assert_eq!(err.annotation, options::PROXY_MEMORY);
    assert_eq!(t, before);
}

#[test]
fn the_patch_gives_the_injected_pod_and_keeps_unknown_fields() {
    let mut pod = web();
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["spec"]["someFutureField"] = json!({"keep": true});
    pod["status"] = json!({"phase": "Pending"});
    let injection = patch_for(&pod, Some("shop"), &InjectSettings::new()).expect("injects");
    assert_eq!(injection.decision, Decision::Injected);
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &injection.patch).expect("applies");
    assert_eq!(patched["spec"]["someFutureField"], json!({"keep": true}));
    assert_eq!(patched["status"], json!({"phase": "Pending"}));
    let expected = serde_json::to_value(injected(web())).expect("json");
    assert_eq!(patched["spec"], {
        let mut spec = expected["spec"].clone();
        spec["someFutureField"] = json!({"keep": true});
        spec
    });
    assert_eq!(patched["metadata"], expected["metadata"]);
    // Only additions: nothing of the Pod's own is replaced.
    let ops = serde_json::to_value(&injection.patch).expect("json");
    assert!(
        ops.as_array()
            .expect("ops")
            .iter()
            .all(|op| op["op"] == "add"),
        "{ops}"
    );
    // And the patched Pod is injected already.
    let again = patch_for(&patched, Some("shop"), &InjectSettings::new()).expect("reads");
    assert_eq!(
        again.decision,
        Decision::Skipped(SkipReason::AlreadyInjected)
    );
    assert!(again.patch.0.is_empty());
}

#[test]
fn a_pod_without_annotations_init_containers_or_volumes_gets_them_whole() {
    let pod = json!({"metadata": {"name": "bare"}, "spec": {"containers": [{"name": "app", "image": "app"}]}});
    let injection = patch_for(&pod, Some("shop"), &InjectSettings::new()).expect("injects");
    let paths: Vec<String> = serde_json::to_value(&injection.patch)
        .expect("json")
        .as_array()
        .expect("ops")
        .iter()
        .map(|op| {
            format!(
                "{} {}",
                op["op"].as_str().expect("op"),
                op["path"].as_str().expect("path")
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            "add /metadata/annotations",
            "add /spec/initContainers",
            "add /spec/volumes"
        ]
    );
}

#[test]
fn not_a_pod_is_an_error() {
    let err = patch_for(
        &json!({"spec": {"containers": "web"}}),
        None,
        &InjectSettings::new(),
    )
    .expect_err("containers is a list");
    assert!(matches!(err, InjectError::NotAPod(_)), "{err:?}");
}
