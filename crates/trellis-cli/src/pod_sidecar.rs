//! `trellis proxy --kubernetes`: the sidecar that injection puts in a Pod, configured
//! from the environment the injected container gets (the Pod's name, namespace, IP and
//! ServiceAccount through the downward API; the control plane's address; the projected
//! ServiceAccount token that proves the Pod). Its inbound and outbound ports are those
//! the capture rules of `trellis iptables install` send the Pod's traffic to.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use trellis_api::proto::v1::Workload;
use trellis_kubernetes::inject::{CapturePorts, DEFAULT_CONTROL_GRPC, TOKEN_DIR};
use trellis_proxy::config::defaults;
use trellis_proxy::control::{self, ControlSettings, LocalSettings};

/// The ports the injector sets up: the capture rules' inbound and outbound ports, and
/// the admin port the probes use (`/ready`, `/live`, `/metrics`), served on every
/// address for the kubelet and for scrapes.
fn ports() -> CapturePorts {
    CapturePorts::default()
}

/// The sidecar's settings, read from the container's environment.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEnvironment {
    pub pod: String,
    pub namespace: String,
    pub address: IpAddr,
    pub service_account: String,
    /// The Pod's `app` label, else its name.
    pub service: String,
    pub control: Vec<String>,
    pub token_file: PathBuf,
    /// The first application port; 0: a client only.
    pub app_port: u16,
}

impl PodEnvironment {
    /// Reads the settings through `var` (the process environment in use).
    pub fn read(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let required = |name: &str| {
            var(name)
                .filter(|v| !v.is_empty())
                .with_context(|| format!("{name} is not set: the injected sidecar gets it from the downward API (run `trellis inject` or the webhook)"))
        };
        let pod = required("TRELLIS_POD_NAME")?;
        let address = required("TRELLIS_POD_IP")?;
        let address = address
            .parse()
            .with_context(|| format!("TRELLIS_POD_IP: {address:?} is not an IP address"))?;
        let app_port = match var("TRELLIS_APP_PORTS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .find(|p| !p.is_empty())
        {
            None => 0,
            Some(port) => port
                .parse()
                .with_context(|| format!("TRELLIS_APP_PORTS: {port:?} is not a port"))?,
        };
        Ok(Self {
            service: var("TRELLIS_SERVICE")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| pod.clone()),
            pod,
            namespace: required("TRELLIS_POD_NAMESPACE")?,
            address,
            service_account: var("TRELLIS_SERVICE_ACCOUNT")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into()),
            control: var("TRELLIS_CONTROL_GRPC")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_CONTROL_GRPC.into())
                .split(',')
                .map(str::to_string)
                .collect(),
            token_file: var("TRELLIS_TOKEN_FILE")
                .filter(|s| !s.is_empty())
                .map_or_else(|| PathBuf::from(TOKEN_DIR).join("token"), PathBuf::from),
            app_port,
        })
    }

    /// The workload the sidecar registers as.
    pub fn workload(&self) -> Workload {
        Workload {
            name: self.pod.clone(),
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            service_account: self.service_account.clone(),
            address: self.address.to_string(),
            inbound_port: u32::from(ports().inbound),
            app_port: u32::from(self.app_port),
            outbound_port: u32::from(ports().outbound),
            ..Default::default()
        }
    }
}

/// Runs the Pod's sidecar until SIGTERM or SIGINT, then drains.
pub async fn run() -> anyhow::Result<()> {
    let env = PodEnvironment::read(|name| std::env::var(name).ok())?;
    let token = std::fs::read_to_string(&env.token_file).with_context(|| {
        format!(
            "cannot read the Pod's ServiceAccount token {}",
            env.token_file.display()
        )
    })?;
    let admin = SocketAddr::from(([0, 0, 0, 0], ports().admin));
    let settings = ControlSettings {
        addresses: env.control.clone(),
        token: token.trim().to_string(),
        workload: env.workload(),
        local: LocalSettings {
            admin,
            drain_timeout: defaults::drain_timeout(),
            max_header_bytes: defaults::max_header_bytes(),
            header_read_timeout: defaults::header_read_timeout(),
            // The capture rules let the proxy's own connections through by its user.
            socket_mark: None,
            resolver: None,
        },
    };
    let listeners = control::SidecarListeners::bind(ports().inbound, None, Some(ports().outbound))?;
    let running = control::Sidecar::start(settings, listeners).await?;
    tracing::info!(pod = %env.pod, namespace = %env.namespace, service = %env.service, "sidecar started");
    crate::proxy::wait_for_stop().await?;
    let left = running.proxy.shutdown().await;
    if left > 0 {
        tracing::warn!(connections = left, "drain deadline passed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_downward_api_names_the_workload() {
        let read = PodEnvironment::read(env(&[
            ("TRELLIS_POD_NAME", "books-7d9f-x2"),
            ("TRELLIS_POD_NAMESPACE", "shop"),
            ("TRELLIS_POD_IP", "10.244.0.7"),
            ("TRELLIS_SERVICE_ACCOUNT", "books"),
            ("TRELLIS_SERVICE", "books"),
            ("TRELLIS_APP_PORTS", "8080,9090"),
        ]))
        .expect("settings");
        let workload = read.workload();
        assert_eq!(
            (workload.name.as_str(), workload.namespace.as_str()),
            ("books-7d9f-x2", "shop")
        );
        assert_eq!(
            (workload.service.as_str(), workload.service_account.as_str()),
            ("books", "books")
        );
        assert_eq!(
            (workload.address.as_str(), workload.app_port),
            ("10.244.0.7", 8080)
        );
        assert_eq!(
            (workload.inbound_port, workload.outbound_port),
            (7143, 7140)
        );
        assert_eq!(read.control, [DEFAULT_CONTROL_GRPC]);
        assert_eq!(
            read.token_file,
            PathBuf::from("/var/run/secrets/trellis.dev/serviceaccount/token")
        );
    }

    #[test]
    fn a_missing_or_wrong_variable_is_named() {
        let err = PodEnvironment::read(env(&[("TRELLIS_POD_NAME", "a")])).expect_err("no IP");
        assert!(
            err.to_string().contains("TRELLIS_POD_IP is not set"),
            "{err}"
        );
        let err = PodEnvironment::read(env(&[
            ("TRELLIS_POD_NAME", "a"),
            ("TRELLIS_POD_NAMESPACE", "shop"),
            ("TRELLIS_POD_IP", "10.0.0.300"),
        ]))
        .expect_err("a wrong IP");
        assert!(err.to_string().contains("not an IP address"), "{err}");
        // Without an `app` label (empty from the downward API) the Pod is its own service,
        // and without ports it is a client only.
        let read = PodEnvironment::read(env(&[
            ("TRELLIS_POD_NAME", "job-1"),
            ("TRELLIS_POD_NAMESPACE", "shop"),
            ("TRELLIS_POD_IP", "10.244.0.8"),
            ("TRELLIS_SERVICE", ""),
        ]))
        .expect("settings");
        assert_eq!((read.service.as_str(), read.app_port), ("job-1", 0));
    }
}
