//! Apply, read and delete through the router: actions, bookkeeping, validation,
//! conflicts and computed status.

use axum::http::StatusCode;
use serde_json::Value;

use super::{actions, condition, route, service, Api};
use crate::registry::{ProxyStatus, SyncState};

#[tokio::test]
async fn apply_reports_created_configured_unchanged() {
    let api = Api::new();
    let web = service("shop", "web", 80);
    let labelled = web.replace(
        "namespace: shop}",
        "namespace: shop, labels: {tier: front}}",
    );
    // (documents, actions, generation of shop/web, generation of shop/r)
    let steps = [
        (
            format!("{web}---\n{}", route("shop", "r", "web", 1)),
            vec!["created Service/shop/web", "created HTTPRoute/shop/r"],
            1,
            1,
        ),
        (
            format!("{web}---\n{}", route("shop", "r", "web", 1)),
            vec!["unchanged Service/shop/web", "unchanged HTTPRoute/shop/r"],
            1,
            1,
        ),
        (
            route("shop", "r", "web", 2),
            vec!["configured HTTPRoute/shop/r"],
            1,
            2,
        ),
        (labelled.clone(), vec!["configured Service/shop/web"], 1, 2),
        (labelled, vec!["unchanged Service/shop/web"], 1, 2),
    ];
    let mut created_at = None;
    for (i, (docs, want, web_generation, route_generation)) in steps.into_iter().enumerate() {
        let (status, body) = api.apply(&docs).await;
        assert_eq!(status, StatusCode::OK, "step {i}: {body}");
        assert_eq!(actions(&body), want, "step {i}");

        let (_, svc) = api.get("/api/v1/resources/svc/shop/web").await;
        let (_, r) = api.get("/api/v1/resources/httproutes/shop/r").await;
        assert_eq!(
            svc["metadata"]["generation"], web_generation,
            "step {i}: {svc}"
        );
        assert_eq!(
            r["metadata"]["generation"], route_generation,
            "step {i}: {r}"
        );
        let stamp = r["metadata"]["creationTimestamp"].clone();
        assert!(stamp.is_string(), "{r}");
        assert_eq!(created_at.get_or_insert(stamp.clone()), &stamp, "kept");
        // resourceVersion is the revision of the object's last write.
        let key = "/resources/HTTPRoute/shop/r";
        let entry = crate::store::Store::get(api.store.as_ref(), key).await;
        let revision = entry.expect("get").expect("stored").revision;
        assert_eq!(r["metadata"]["resourceVersion"], revision.to_string());
    }
    let (_, health) = api.get("/api/v1/health").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["revision"], 4, "unchanged documents are not written");
}

#[tokio::test]
async fn bad_requests_name_the_problem_and_write_nothing() {
    let api = Api::new();
    let bad_weight = route("shop", "r", "web", 2_000_000);
    let unknown_field = service("shop", "web", 80).replace("ports:", "portz:");
    // (method is apply?, path or body, status, text the error must contain)
    let cases = [
        (
            true,
            format!("{}---\n{bad_weight}", service("shop", "web", 80)),
            StatusCode::BAD_REQUEST,
            "document 2: spec.rules[0].backendRefs[0].weight",
        ),
        (
            true,
            unknown_field,
            StatusCode::BAD_REQUEST,
            "spec.portz: unknown field `portz`",
        ),
        (
            true,
            "kind: [".to_string(),
            StatusCode::BAD_REQUEST,
            "invalid YAML",
        ),
        (
            true,
            String::new(),
            StatusCode::BAD_REQUEST,
            "holds no resources",
        ),
        (
            false,
            "/api/v1/resources/pods".to_string(),
            StatusCode::BAD_REQUEST,
            "unknown kind \"pods\": expected one of services, workloads, httproutes",
        ),
        (
            false,
            "/api/v1/resources/meshconfigs/default/default".to_string(),
            StatusCode::BAD_REQUEST,
            "MeshConfig is cluster-wide: use - as the namespace",
        ),
        (
            false,
            "/api/v1/resources/svc/-/web".to_string(),
            StatusCode::BAD_REQUEST,
            "Service is namespaced",
        ),
        (
            false,
            "/api/v1/resources/svc/shop/web".to_string(),
            StatusCode::NOT_FOUND,
            "Service shop/web not found",
        ),
        (
            false,
            "/api/v2/x".to_string(),
            StatusCode::NOT_FOUND,
            "no such endpoint: GET /api/v2/x",
        ),
    ];
    for (is_apply, input, want_status, want_text) in cases {
        let (status, body) = if is_apply {
            api.apply(&input).await
        } else {
            api.get(&input).await
        };
        assert_eq!(status, want_status, "{input}: {body}");
        let error = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
        assert!(error.contains(want_text), "{input}: {error}");
        assert!(!error.contains('\n'), "one line: {error:?}");
        assert_eq!(api.stored().await, 0, "{input}: nothing written");
    }
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict() {
    let api = Api::new();
    api.apply(&route("shop", "r", "web", 1)).await;
    let (_, first) = api.get("/api/v1/resources/httproute/shop/r").await;
    let old = first["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();

    // Applying what `get` returned, edited, is a compare-and-swap that succeeds once.
    let mut edited = first.clone();
    edited["spec"]["rules"][0]["backendRefs"][0]["weight"] = Value::from(5);
    let (status, body) = api.apply(&edited.to_string()).await;
    assert_eq!(
        (status, actions(&body)),
        (
            StatusCode::OK,
            vec!["configured HTTPRoute/shop/r".to_string()]
        )
    );
    let (_, now) = api.get("/api/v1/resources/httproute/shop/r").await;
    let now = now["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();

    edited["spec"]["rules"][0]["backendRefs"][0]["weight"] = Value::from(7);
    let (status, body) = api.apply(&edited.to_string()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body["error"],
        format!("conflict: HTTPRoute shop/r was changed since resourceVersion {old} (now {now})")
    );

    // A resourceVersion for an object that is not there is refused too.
    let mut gone = edited.clone();
    gone["metadata"]["name"] = Value::from("other");
    let (status, body) = api.apply(&gone.to_string()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("does not exist"),
        "{body}"
    );
}

#[tokio::test]
async fn a_later_conflict_reports_what_was_applied_before_it() {
    let api = Api::new();
    api.apply(&route("shop", "r", "web", 1)).await;
    let (_, mut r) = api.get("/api/v1/resources/httproute/shop/r").await;
    api.apply(&route("shop", "r", "web", 2)).await;
    r["spec"]["rules"][0]["backendRefs"][0]["weight"] = Value::from(3);
    let body = format!("{}---\n{r}", service("shop", "web", 80));
    let (status, body) = api.apply(&body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["applied"][0]["name"], "web", "{body}");
    assert_eq!(body["applied"][0]["action"], "created", "{body}");
}

#[tokio::test]
async fn resolved_refs_follow_what_exists() {
    let api = Api::new();
    api.apply(&route("shop", "r", "web-v1", 1)).await;
    let workload = "apiVersion: trellis.dev/v1alpha1
kind: Workload
metadata: {name: web-v1-abc, namespace: shop, labels: {app: web-v1}}
spec: {address: 127.0.0.1}
";
    // (document applied before reading, ResolvedRefs status, reason, message)
    let steps = [
        (
            None,
            "False",
            "BackendNotFound",
            "not found: Service shop/web, Service shop/web-v1",
        ),
        (
            Some(service("shop", "web", 80)),
            "False",
            "BackendNotFound",
            "not found: Service shop/web-v1",
        ),
        (Some(workload.to_string()), "True", "ResolvedRefs", ""),
        (
            Some(service("shop", "web-v1", 80)),
            "True",
            "ResolvedRefs",
            "",
        ),
    ];
    for (doc, status, reason, message) in steps {
        if let Some(doc) = doc {
            let (code, body) = api.apply(&doc).await;
            assert_eq!(code, StatusCode::OK, "{body}");
        }
        let (_, r) = api.get("/api/v1/resources/httproutes/shop/r").await;
        let want = (status.to_string(), reason.to_string(), message.to_string());
        assert_eq!(condition(&r, "ResolvedRefs"), want, "{r}");
        assert_eq!(condition(&r, "Accepted").0, "True");
        assert_eq!(r["status"]["conditions"][1]["observedGeneration"], 1);
        // Lists carry the same status.
        let (_, list) = api.get("/api/v1/resources/httproutes").await;
        assert_eq!(condition(&list["items"][0], "ResolvedRefs").0, status);
    }
    // Deleting the Service and the Workload makes the reference dangle again.
    api.delete("/api/v1/resources/svc/shop/web-v1").await;
    api.delete("/api/v1/resources/wl/shop/web-v1-abc").await;
    let (_, r) = api.get("/api/v1/resources/httproutes/shop/r").await;
    assert_eq!(condition(&r, "ResolvedRefs").0, "False");
}

#[tokio::test]
async fn lists_sort_and_filter_by_namespace() {
    let api = Api::new();
    let docs = [
        service("b", "x", 80),
        service("a-b", "v", 80),
        service("a", "z", 80),
        service("a", "w", 80),
        "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: default}\nspec: {}\n"
            .to_string(),
    ];
    let (status, body) = api.apply(&docs.join("---\n")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // (path, namespace/name of each item)
    let cases = [
        (
            "/api/v1/resources/services",
            vec!["a/w", "a/z", "a-b/v", "b/x"],
        ),
        ("/api/v1/resources/Service?namespace=a", vec!["a/w", "a/z"]),
        ("/api/v1/resources/svc?namespace=none", vec![]),
        ("/api/v1/resources/meshconfig?namespace=a", vec!["/default"]),
        ("/api/v1/resources/httproutes", vec![]),
    ];
    for (path, want) in cases {
        let (status, body) = api.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let got: Vec<String> = body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|r| {
                let m = &r["metadata"];
                format!(
                    "{}/{}",
                    m["namespace"].as_str().unwrap_or(""),
                    m["name"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(got, want, "{path}");
    }
    let (status, mesh) = api.get("/api/v1/resources/meshconfigs/-/default").await;
    assert_eq!(status, StatusCode::OK, "{mesh}");
    assert_eq!(mesh["kind"], "MeshConfig");
}

#[tokio::test]
async fn delete_returns_the_object_then_404() {
    let api = Api::new();
    api.apply(&service("shop", "web", 80)).await;
    let path = "/api/v1/resources/services/shop/web";
    let (status, body) = api.delete(path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deleted"]["metadata"]["name"], "web");
    assert_eq!(body["deleted"]["kind"], "Service");
    for (status, body) in [api.delete(path).await, api.get(path).await] {
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"], "Service shop/web not found");
    }
    assert_eq!(api.stored().await, 0);
}

#[tokio::test]
async fn proxies_come_from_the_registry() {
    let api = Api::new();
    let (_, empty) = api.get("/api/v1/proxies").await;
    assert_eq!(empty, serde_json::json!({"items": []}));
    api.registry.upsert(ProxyStatus {
        workload: "web-1".into(),
        namespace: "shop".into(),
        service: "web".into(),
        address: "127.0.0.1:7143".into(),
        proxy_version: "0.1.0".into(),
        sent_version: 3,
        acked_version: 2,
        state: SyncState::Nacked,
        last_error: Some("bad route".into()),
        connected_at: "2026-11-05T10:00:00Z".into(),
        identity: "spiffe://trellis.local/ns/default/sa/web".into(),
        certificate_expires: None,
        admin_address: String::new(),
    });
    let (status, body) = api.get("/api/v1/proxies").await;
    assert_eq!(status, StatusCode::OK);
    let p = &body["items"][0];
    assert_eq!(
        (
            &p["workload"],
            &p["state"],
            &p["ackedVersion"],
            &p["lastError"]
        ),
        (
            &Value::from("web-1"),
            &Value::from("nacked"),
            &Value::from(2),
            &Value::from("bad route")
        )
    );
}
