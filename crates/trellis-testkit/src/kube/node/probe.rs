//! Startup and readiness probes as the kubelet runs them: `httpGet` (a status from 200
//! to 399), `tcpSocket` (a connection) and `exec` (exit status 0), against the Pod's
//! IP from the node (the root network namespace), with the probe's delay, period,
//! timeout and thresholds.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::spec::SpecError;

/// What one probe attempt does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Http { port: u16, path: String },
    Tcp { port: u16 },
    Exec { command: Vec<String> },
}

/// A probe of a container, with its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub check: Check,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(value.map_or(default, |v| v.max(0) as u64))
}

/// A port number, or the number of the container's port of that name.
fn port(container: &Container, port: &IntOrString) -> Result<u16, SpecError> {
    let number = match port {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    };
    number
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
        .ok_or_else(|| {
            SpecError(format!(
                "container {:?}: probe port {port:?} is neither a port number nor the name \
                 of one of its ports",
                container.name
            ))
        })
}

impl ProbeSpec {
    /// Reads a probe of `container`; `max_period` bounds `periodSeconds` (production
    /// periods would make tests wait for nothing).
    pub fn new(
        container: &Container,
        probe: &Probe,
        max_period: Duration,
    ) -> Result<Self, SpecError> {
        let check = if let Some(http) = &probe.http_get {
            if http.scheme.as_deref().is_some_and(|s| s != "HTTP") {
                return Err(SpecError(format!(
                    "container {:?}: only httpGet probes with scheme HTTP are supported",
                    container.name
                )));
            }
            Check::Http {
                port: port(container, &http.port)?,
                path: http.path.clone().unwrap_or_else(|| "/".to_string()),
            }
        } else if let Some(tcp) = &probe.tcp_socket {
            Check::Tcp {
                port: port(container, &tcp.port)?,
            }
        } else if let Some(exec) = &probe.exec {
            Check::Exec {
                command: exec.command.clone().unwrap_or_default(),
            }
        } else {
            return Err(SpecError(format!(
                "container {:?}: a probe needs httpGet, tcpSocket or exec (grpc is not \
                 supported by the node agent)",
                container.name
            )));
        };
        Ok(Self {
            check,
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10).min(max_period),
            timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        })
    }

    /// One attempt against the Pod at `ip` (network namespace `netns`, for `exec`).
    pub async fn attempt(&self, ip: Ipv4Addr, netns: &str) -> bool {
        let attempt = async {
            match &self.check {
                Check::Http { port, path } => http_ok(ip, *port, path).await,
                Check::Tcp { port } => TcpStream::connect((ip, *port)).await.is_ok(),
                Check::Exec { command } => tokio::process::Command::new("ip")
                    .args(["netns", "exec", netns])
                    .args(command)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .is_ok_and(|s| s.success()),
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or(false)
    }
}

/// A `GET` whose response status is from 200 to 399.
async fn http_ok(ip: Ipv4Addr, port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect((ip, port)).await else {
        return false;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.36\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    // The status line is all that counts; a response may never close.
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok());
    code.is_some_and(|c| (200..400).contains(&c))
}

/// Counts consecutive results against a probe's thresholds: the verdict changes only
/// after `success_threshold` successes or `failure_threshold` failures in a row.
#[derive(Debug, Clone)]
pub struct Verdict {
    passing: bool,
    streak: u32,
    success_threshold: u32,
    failure_threshold: u32,
}

impl Verdict {
    pub fn new(spec: &ProbeSpec) -> Self {
        Self {
            passing: false,
            streak: 0,
            success_threshold: spec.success_threshold,
            failure_threshold: spec.failure_threshold,
        }
    }

    /// Records one attempt; returns the verdict.
    pub fn record(&mut self, ok: bool) -> bool {
        if ok == self.passing {
            self.streak = 0;
        } else {
            self.streak += 1;
            let needed = if ok {
                self.success_threshold
            } else {
                self.failure_threshold
            };
            if self.streak >= needed {
                self.passing = ok;
                self.streak = 0;
            }
        }
        self.passing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(success_threshold: u32, failure_threshold: u32) -> ProbeSpec {
        ProbeSpec {
            check: Check::Tcp { port: 1 },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold,
            failure_threshold,
        }
    }

    #[test]
    fn the_verdict_changes_after_its_threshold_in_a_row() {
        let mut verdict = Verdict::new(&spec(2, 3));
        let results = [
            true, false, true, true, false, false, true, false, false, false,
        ];
        let want = [
            false, false, false, true, true, true, true, true, true, false,
        ];
        let got: Vec<bool> = results.iter().map(|ok| verdict.record(*ok)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn probes_read_named_ports_and_bound_their_period() {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "app",
            "ports": [{"name": "admin", "containerPort": 15020}]
        }))
        .expect("a container");
        let probe: Probe = serde_json::from_value(serde_json::json!({
            "httpGet": {"path": "/ready", "port": "admin"},
            "periodSeconds": 10,
            "failureThreshold": 5
        }))
        .expect("a probe");
        let read = ProbeSpec::new(&container, &probe, Duration::from_secs(1)).expect("valid");
        assert_eq!(
            read.check,
            Check::Http {
                port: 15020,
                path: "/ready".to_string()
            }
        );
        assert_eq!(read.period, Duration::from_secs(1));
        assert_eq!(read.failure_threshold, 5);

        let unnamed: Probe =
            serde_json::from_value(serde_json::json!({"tcpSocket": {"port": "web"}}))
                .expect("a probe");
        let err =
            ProbeSpec::new(&container, &unnamed, Duration::from_secs(1)).expect_err("no port web");
        assert!(err.0.contains("web"), "{err}");
    }
}
