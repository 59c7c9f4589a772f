//! The control plane's workload: a Deployment of `trellis control --kubernetes`, the
//! PodDisruptionBudget that keeps one replica through voluntary disruptions, and the
//! Service proxies, operators and the API server's webhook calls reach it by.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    metadata, part_of, InstallSettings, CONTROL, GRPC_PORT, HTTP_PORT, INJECT_LABEL, VERSION,
    WEBHOOK_PORT,
};

/// Where the control plane keeps its data directory (an emptyDir: its state lives in
/// the API server).
const DATA_DIR: &str = "/var/lib/trellis";
/// The unprivileged user the image runs as.
const USER: i64 = 65532;
/// The control plane's liveness and readiness endpoint on the HTTP port.
const HEALTH_PATH: &str = "/api/v1/health";

/// The labels that pick the control plane's Pods.
fn selector_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_string(), CONTROL.to_string())])
}

fn selector() -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels()),
        ..LabelSelector::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: number,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

fn health_probe(period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(HEALTH_PATH.to_string()),
            port: IntOrString::String("http".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

/// The `control` container: `trellis control --kubernetes`, listening on every address,
/// unprivileged, on a read-only root file system.
fn container(settings: &InstallSettings) -> Container {
    let args = [
        "control".to_string(),
        "--kubernetes".to_string(),
        "--data-dir".to_string(),
        DATA_DIR.to_string(),
        "--http-addr".to_string(),
        format!("0.0.0.0:{HTTP_PORT}"),
        "--grpc-addr".to_string(),
        format!("0.0.0.0:{GRPC_PORT}"),
        "--webhook-addr".to_string(),
        format!("0.0.0.0:{WEBHOOK_PORT}"),
    ];
    Container {
        name: "control".to_string(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: Some(args.to_vec()),
        env: Some(vec![
            // Where the control plane keeps its Secret and Lease: its own namespace,
            // whatever --namespace the install was given.
            field_env("TRELLIS_NAMESPACE", "metadata.namespace"),
            // The image the injector gives the sidecars: the control plane's own.
            EnvVar {
                name: "TRELLIS_IMAGE".to_string(),
                value: Some(settings.image.clone()),
                ..EnvVar::default()
            },
        ]),
        ports: Some(vec![
            port("grpc", GRPC_PORT),
            port("http", HTTP_PORT),
            port("webhook", WEBHOOK_PORT),
        ]),
        readiness_probe: Some(health_probe(5, 3)),
        liveness_probe: Some(health_probe(10, 6)),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "100m"), ("memory", "128Mi")])),
            limits: Some(quantities(&[("memory", "1Gi")])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".to_string(),
            mount_path: DATA_DIR.to_string(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// `settings.replicas` control planes, spread over nodes, replaced one at a time
/// without ever running fewer.
pub(super) fn deployment(settings: &InstallSettings) -> Deployment {
    let mut meta = metadata(CONTROL, Some(&settings.namespace));
    meta.labels
        .get_or_insert_default()
        .insert("app.kubernetes.io/version".to_string(), VERSION.to_string());
    let mut pod_labels = part_of();
    pod_labels.extend(selector_labels());
    pod_labels.insert(INJECT_LABEL.to_string(), "disabled".to_string());
    let pod = PodSpec {
        service_account_name: Some(CONTROL.to_string()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(USER),
            run_as_group: Some(USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container(settings)],
        volumes: Some(vec![Volume {
            name: "data".to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }]),
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".to_string(),
            when_unsatisfiable: "ScheduleAnyway".to_string(),
            label_selector: Some(selector()),
            ..TopologySpreadConstraint::default()
        }]),
        ..PodSpec::default()
    };
    Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas: Some(settings.replicas),
            selector: selector(),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// At least one control plane through drains and other voluntary disruptions.
pub(super) fn disruption_budget(namespace: &str) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(CONTROL, Some(namespace)),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(selector()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn service_port(name: &str, port: i32, target: &str) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::String(target.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

/// `trellis-control.<namespace>.svc`: gRPC for proxies, HTTP for operators and the
/// dashboard, and 443 for the API server's calls to the injection webhook.
pub(super) fn service(namespace: &str) -> Service {
    Service {
        metadata: metadata(CONTROL, Some(namespace)),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels()),
            ports: Some(vec![
                service_port("grpc", GRPC_PORT, "grpc"),
                service_port("http", HTTP_PORT, "http"),
                service_port("webhook", 443, "webhook"),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
