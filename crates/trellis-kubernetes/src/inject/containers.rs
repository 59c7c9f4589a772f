//! The two containers injection adds: the capture init container and the proxy as a
//! native sidecar.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSpec, Probe, ResourceRequirements, SecurityContext, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{InjectSettings, PodOptions, INIT_CONTAINER, PROXY_CONTAINER, TOKEN_DIR, TOKEN_VOLUME};

/// The ports of the application's containers the mesh serves: every declared TCP
/// container port but the excluded ones, sorted, once each.
pub(super) fn app_ports(spec: &PodSpec, options: &PodOptions) -> Vec<u16> {
    let mut ports: Vec<u16> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .filter(|p| !options.exclude_inbound_ports.contains(p))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// `trellis-init`: installs the capture rules in the Pod's network namespace with
/// `trellis iptables install`, which needs NET_ADMIN and NET_RAW, then exits.
pub(super) fn capture(settings: &InjectSettings, options: &PodOptions) -> Container {
    let ports = settings.ports;
    let mut args: Vec<String> = [
        "iptables",
        "install",
        "--inbound-port",
        &ports.inbound.to_string(),
        "--outbound-port",
        &ports.outbound.to_string(),
        "--admin-port",
        &ports.admin.to_string(),
        "--proxy-uid",
        &settings.proxy_uid.to_string(),
    ]
    .map(str::to_owned)
    .into();
    let list = |items: &[u16]| {
        items
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if !options.exclude_inbound_ports.is_empty() {
        args.push("--exclude-inbound-ports".to_owned());
        args.push(list(&options.exclude_inbound_ports));
    }
    if !options.exclude_outbound_ports.is_empty() {
        args.push("--exclude-outbound-ports".to_owned());
        args.push(list(&options.exclude_outbound_ports));
    }
    if !options.exclude_outbound_ip_ranges.is_empty() {
        args.push("--exclude-outbound-cidrs".to_owned());
        args.push(options.exclude_outbound_ip_ranges.join(","));
    }
    Container {
        name: INIT_CONTAINER.to_owned(),
        image: Some(settings.image.clone()),
        args: Some(args),
        resources: Some(requirements(
            [("cpu", "10m"), ("memory", "16Mi")],
            [("memory", "64Mi")],
        )),
        // Root with only the two network capabilities: iptables-restore needs them and
        // nothing else, and writes its lock under /run, so the root file system stays
        // writable for this short-lived container.
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".to_owned(), "NET_RAW".to_owned()]),
                drop: Some(vec!["ALL".to_owned()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `trellis-proxy`: `trellis proxy --kubernetes` as a native sidecar. The kubelet
/// starts the next init container (and the application) only once its startup probe
/// says ready, so the application's first connection already has a proxy.
pub(super) fn proxy(
    settings: &InjectSettings,
    options: &PodOptions,
    app_ports: &[u16],
) -> Container {
    let admin = i32::from(settings.ports.admin);
    let ready = |period, failures| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/ready".to_owned()),
            port: IntOrString::Int(admin),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let value = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..Default::default()
    };
    let ports: Vec<String> = app_ports.iter().map(u16::to_string).collect();
    let resources = &options.resources;
    Container {
        name: PROXY_CONTAINER.to_owned(),
        image: Some(settings.image.clone()),
        args: Some(vec!["proxy".to_owned(), "--kubernetes".to_owned()]),
        restart_policy: Some("Always".to_owned()),
        env: Some(vec![
            field("TRELLIS_POD_NAME", "metadata.name"),
            field("TRELLIS_POD_NAMESPACE", "metadata.namespace"),
            field("TRELLIS_POD_IP", "status.podIP"),
            field("TRELLIS_SERVICE_ACCOUNT", "spec.serviceAccountName"),
            value("TRELLIS_CONTROL_GRPC", settings.control_grpc.clone()),
            value("TRELLIS_TOKEN_FILE", format!("{TOKEN_DIR}/token")),
            value("TRELLIS_APP_PORTS", ports.join(",")),
            value("TRELLIS_LOG", options.log_level.clone()),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("trellis-admin".to_owned()),
            container_port: admin,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        // Up to two minutes to get a configuration and a certificate, checked every
        // second so the application starts as soon as the proxy can serve it.
        startup_probe: Some(ready(1, 120)),
        readiness_probe: Some(ready(5, 3)),
        resources: Some(requirements(
            cpu_memory(&resources.cpu_request, &resources.memory_request),
            cpu_memory(&resources.cpu_limit, &resources.memory_limit),
        )),
        security_context: Some(SecurityContext {
            run_as_user: Some(settings.proxy_uid),
            run_as_group: Some(settings.proxy_uid),
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: TOKEN_VOLUME.to_owned(),
            mount_path: TOKEN_DIR.to_owned(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// The CPU and memory pairs that are set.
fn cpu_memory<'a>(
    cpu: &'a Option<String>,
    memory: &'a Option<String>,
) -> Vec<(&'static str, &'a str)> {
    [("cpu", cpu), ("memory", memory)]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
}

fn requirements<'a>(
    requests: impl IntoIterator<Item = (&'a str, &'a str)>,
    limits: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> ResourceRequirements {
    ResourceRequirements {
        requests: quantities(requests),
        limits: quantities(limits),
        ..Default::default()
    }
}

fn quantities<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<BTreeMap<String, Quantity>> {
    let map: BTreeMap<String, Quantity> = pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
        .collect();
    (!map.is_empty()).then_some(map)
}
