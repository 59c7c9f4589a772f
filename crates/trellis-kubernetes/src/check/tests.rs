use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

#[test]
fn kubernetes_versions_before_native_sidecars_fail() {
    assert_eq!(version_finding("v1.36.3", "1", "36").level, Level::Ok);
    assert_eq!(version_finding("v1.29.0-eks", "1", "29+").level, Level::Ok);
    let old = version_finding("v1.28.9", "1", "28");
    assert_eq!(old.level, Level::Fail);
    assert!(old.text.contains("native sidecars"), "{old}");
    assert_eq!(version_finding("weird", "", "x").level, Level::Warn);
}

#[test]
fn gateway_releases_read_from_their_bundle_version() {
    assert_eq!(parse_release("v1.6.3"), Some((1, 6)));
    assert_eq!(parse_release("v1.1.0-rc1"), Some((1, 1)));
    assert_eq!(parse_release("v2"), None);
    assert_eq!(parse_release("1.6.3"), None);
}

fn crd(release: Option<&str>, versions: &[(&str, bool)]) -> CustomResourceDefinition {
    CustomResourceDefinition {
        metadata: ObjectMeta {
            annotations: release.map(|r| [(BUNDLE_VERSION.to_owned(), r.to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: CustomResourceDefinitionSpec {
            versions: versions
                .iter()
                .map(|(name, served)| CustomResourceDefinitionVersion {
                    name: (*name).to_owned(),
                    served: *served,
                    ..CustomResourceDefinitionVersion::default()
                })
                .collect(),
            ..CustomResourceDefinitionSpec::default()
        },
        ..CustomResourceDefinition::default()
    }
}

#[test]
fn a_route_crd_must_serve_v1_of_a_supported_release() {
    let name = "httproutes.gateway.networking.k8s.io";
    let current = crd(Some("v1.6.3"), &[("v1", true), ("v1beta1", true)]);
    assert_eq!(
        gateway_crd_finding("HTTPRoute", name, Some(&current)).level,
        Level::Ok
    );
    let missing = gateway_crd_finding("HTTPRoute", name, None);
    assert_eq!(missing.level, Level::Fail);
    assert!(
        missing.text.contains("install the Gateway API"),
        "{missing}"
    );
    // Only HTTPRoute is needed; without TCPRoute, TCP routes are not read.
    assert_eq!(
        gateway_crd_finding("TCPRoute", "tcproutes", None).level,
        Level::Warn
    );
    let alpha_only = crd(Some("v1.0.0"), &[("v1alpha2", true)]);
    let finding = gateway_crd_finding("HTTPRoute", name, Some(&alpha_only));
    assert_eq!(finding.level, Level::Fail);
    assert!(finding.text.contains("without version v1"), "{finding}");
    let not_served = crd(Some("v1.6.3"), &[("v1", false)]);
    assert_eq!(
        gateway_crd_finding("HTTPRoute", name, Some(&not_served)).level,
        Level::Fail
    );
    let old = crd(Some("v1.0.0"), &[("v1", true)]);
    assert_eq!(
        gateway_crd_finding("HTTPRoute", name, Some(&old)).level,
        Level::Warn
    );
    let unlabelled = crd(None, &[("v1", true)]);
    assert_eq!(
        gateway_crd_finding("HTTPRoute", name, Some(&unlabelled)).level,
        Level::Warn
    );
}

#[test]
fn each_install_object_is_asked_about_by_group_resource_and_namespace() {
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "trellis-control", "namespace": "trellis-system"}});
    let attributes = create_attributes(&deployment).expect("attributes");
    assert_eq!(attributes.verb.as_deref(), Some("create"));
    assert_eq!(attributes.group.as_deref(), Some("apps"));
    assert_eq!(attributes.resource.as_deref(), Some("deployments"));
    assert_eq!(attributes.namespace.as_deref(), Some("trellis-system"));
    assert_eq!(describe(&attributes), "deployments.apps in trellis-system");
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}});
    let attributes = create_attributes(&namespace).expect("attributes");
    assert_eq!(attributes.group.as_deref(), Some(""));
    assert_eq!(describe(&attributes), "namespaces");
    assert!(create_attributes(&json!({"kind": "Pod"})).is_none());

    // Every object of the install has a kind whose plural is the regular one.
    let manifests = Manifests::new(&crate::install::InstallSettings::default());
    for object in manifests.objects().expect("objects") {
        let resource = create_attributes(&object)
            .and_then(|a| a.resource)
            .expect("resource");
        assert!(
            [
                "namespaces",
                "customresourcedefinitions",
                "serviceaccounts",
                "clusterroles",
                "clusterrolebindings",
                "roles",
                "rolebindings",
                "services",
                "deployments",
                "poddisruptionbudgets",
                "mutatingwebhookconfigurations"
            ]
            .contains(&resource.as_str()),
            "{resource}"
        );
    }
}

#[test]
fn findings_print_their_level_first() {
    assert_eq!(Finding::new(Level::Ok, "fine").to_string(), "ok    fine");
    assert_eq!(
        Finding::new(Level::Fail, "broken").to_string(),
        "FAIL  broken"
    );
}
