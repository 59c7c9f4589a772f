use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;

/// An AdmissionReview as the API server sends it for `kubectl run web --image=web:1
/// -n shop` (uid, userInfo and options included).
fn review_of(object: Value, operation: &str) -> Value {
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "web",
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-run"}
        }
    })
}

fn pod() -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"run": "web"}},
        "spec": {
            "containers": [{
                "name": "web", "image": "web:1", "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {}, "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"
            }],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst", "serviceAccountName": "default",
            "serviceAccount": "default", "securityContext": {},
            "schedulerName": "default-scheduler", "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {}
    })
}

/// POSTs `body` to the router and returns the status and the answer's JSON (or text).
async fn post(body: String) -> (StatusCode, Value) {
    let app = router(Arc::new(InjectSettings::new()));
    let request = Request::post(PATH)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    let response = app.oneshot(request).await.expect("answers");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

/// The answer's decoded JSONPatch, if any.
fn patch_of(answer: &Value) -> Option<json_patch::Patch> {
    let patch = answer["response"].get("patch")?;
    let bytes: Vec<u8> = serde_json::from_value(patch.clone()).expect("bytes");
    Some(serde_json::from_slice(&bytes).expect("a JSONPatch"))
}

#[tokio::test]
async fn a_pod_being_created_gets_the_injection_patch() {
    let (status, answer) = post(review_of(pod(), "CREATE").to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = patch_of(&answer).expect("a patch");
    let mut patched = pod();
    json_patch::patch(&mut patched, &patch).expect("applies to the Pod");
    let names: Vec<&str> = patched["spec"]["initContainers"]
        .as_array()
        .expect("init containers")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["trellis-init", "trellis-proxy"]);
    assert_eq!(
        patched["metadata"]["annotations"]["trellis.dev/injected"],
        super::super::VERSION
    );
    // A second admission of what the first produced changes nothing.
    let (_, again) = post(review_of(patched, "CREATE").to_string()).await;
    assert_eq!(again["response"]["allowed"], true);
    assert!(patch_of(&again).is_none(), "{again}");
}

#[tokio::test]
async fn what_is_not_a_pod_creation_is_allowed_unchanged() {
    let mut service = review_of(
        json!({"kind": "Service", "apiVersion": "v1", "metadata": {"name": "web"}}),
        "CREATE",
    );
    service["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Service"});
    let mut opted_out = pod();
    opted_out["metadata"]["labels"]["trellis.dev/inject"] = json!("disabled");
    let mut control = review_of(pod(), "CREATE");
    control["request"]["namespace"] = json!("trellis-system");
    let cases = [
        ("update", review_of(pod(), "UPDATE")),
        ("delete", review_of(Value::Null, "DELETE")),
        ("service", service),
        ("opted out", review_of(opted_out, "CREATE")),
        ("control plane's namespace", control),
    ];
    for (name, review) in cases {
        let (status, answer) = post(review.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(answer["response"]["allowed"], true, "{name}");
        assert!(patch_of(&answer).is_none(), "{name}: {answer}");
    }
}

#[tokio::test]
async fn a_malformed_review_is_a_400_that_says_why() {
    let cases = [
        ("not json", "{".to_owned(), "not JSON"),
        (
            "no request",
            json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}).to_string(),
            "no request",
        ),
        (
            "old version",
            {
                let mut r = review_of(pod(), "CREATE");
                r["apiVersion"] = json!("admission.k8s.io/v1beta1");
                r.to_string()
            },
            "admission.k8s.io/v1beta1",
        ),
        (
            "no uid",
            {
                let mut r = review_of(pod(), "CREATE");
                r["request"].as_object_mut().expect("request").remove("uid");
                r.to_string()
            },
            "uid",
        ),
    ];
    for (name, body, says) in cases {
        let (status, answer) = post(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
        let text = answer.as_str().expect("a text reason");
        assert!(text.contains(says), "{name}: {text}");
    }
}

#[tokio::test]
async fn an_unreadable_pod_is_allowed_with_a_warning() {
    let mut odd = pod();
    odd["spec"]["containers"] = json!("web");
    let (status, answer) = post(review_of(odd, "CREATE").to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["response"]["allowed"], true);
    assert!(patch_of(&answer).is_none());
    let warning = answer["response"]["warnings"][0]
        .as_str()
        .expect("a warning");
    assert!(warning.contains("did not inject"), "{warning}");
}

#[tokio::test]
async fn a_bad_annotation_denies_the_pod_and_names_it() {
    let mut pod = pod();
    pod["metadata"]["annotations"] = json!({"trellis.dev/exclude-inbound-ports": "ssh"});
    let (status, answer) = post(review_of(pod, "CREATE").to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"]
        .as_str()
        .expect("message");
    assert!(
        message.contains("trellis.dev/exclude-inbound-ports"),
        "{message}"
    );
    assert!(message.contains("\"ssh\""), "{message}");
}

#[test]
fn serving_names_are_the_services_dns_names() {
    assert_eq!(
        serving_names("mesh"),
        [
            "trellis-control.mesh.svc",
            "trellis-control.mesh.svc.cluster.local"
        ]
    );
}

#[test]
fn the_certificate_request_is_for_the_serving_names() {
    let key = WorkloadKey::generate().expect("key");
    let pem = certificate_request("mesh", &key).expect("csr");
    assert!(
        pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{pem}"
    );
}
